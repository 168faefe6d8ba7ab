//! `server eval` and `server train`: routing quality on labelled prompts.
//!
//! A labelled file is JSON Lines, one prompt a line:
//! `{"prompt": str, "weak": number, "strong": number, "benchmark"?: str, "subject"?: str}`,
//! `weak`/`strong` the quality of the weak and the strong model's answer.
//! See the README's "Routing quality".

use crate::routing::Scorer;
use crate::scorer::{self, Example};
use serde::{Deserialize, Serialize};
use shared::quality::{QualityCurve, Scored};
use std::path::{Path, PathBuf};

/// The labelled data shipped in the binary (`datasets/routing-quality/`).
pub const EMBEDDED_NAME: &str = "embedded:labelled.jsonl";
const EMBEDDED: &str = include_str!("../../datasets/routing-quality/labelled.jsonl");

/// One labelled prompt and where it came from.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The text.
    pub prompt: String,
    /// The weak model's quality.
    pub weak: f64,
    /// The strong model's quality.
    pub strong: f64,
    /// Its benchmark, else the file's stem.
    pub set: String,
    /// Its subject, if given.
    pub subject: Option<String>,
    /// The file it is in.
    pub file: String,
    /// Its line (1-based).
    pub line: usize,
}

#[derive(Deserialize)]
struct Line {
    prompt: Option<serde_json::Value>,
    weak: Option<serde_json::Value>,
    strong: Option<serde_json::Value>,
    benchmark: Option<String>,
    subject: Option<String>,
}

/// Reads a labelled file; the error names the file and, for a bad line, the line.
pub fn load(path: &Path) -> Result<Vec<Labelled>, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.clone());
    parse(&name, &stem, &text)
}

/// The embedded labelled data.
pub fn embedded() -> Vec<Labelled> {
    parse(EMBEDDED_NAME, "labelled", EMBEDDED).expect("the shipped data is valid: a test reads it")
}

/// Parses labelled JSON Lines named `name` (blank lines are skipped).
pub fn parse(name: &str, stem: &str, text: &str) -> Result<Vec<Labelled>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let at = |msg: String| format!("{name}:{line}: {msg}");
        let l: Line =
            serde_json::from_str(raw).map_err(|e| at(format!("not a JSON object: {e}")))?;
        let number = |field: &str, v: Option<serde_json::Value>| -> Result<f64, String> {
            match v {
                None | Some(serde_json::Value::Null) => Err(at(format!("`{field}` is missing"))),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| at(format!("`{field}` must be a finite number, got {v}"))),
            }
        };
        let weak = number("weak", l.weak)?;
        let strong = number("strong", l.strong)?;
        let prompt = match l.prompt {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(at("`prompt` must be a string".into())),
        };
        out.push(Labelled {
            prompt,
            weak,
            strong,
            set: l.benchmark.unwrap_or_else(|| stem.to_owned()),
            subject: l.subject,
            file: name.to_owned(),
            line,
        });
    }
    if out.is_empty() {
        return Err(format!("{name}: no labelled prompts"));
    }
    if out.iter().all(|l| l.strong == l.weak) {
        return Err(format!(
            "{name}: `strong` equals `weak` on every line: there is no quality gap to measure"
        ));
    }
    Ok(out)
}

/// The figures of one set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetReport {
    /// The benchmark (or file stem), or `all`.
    pub name: String,
    /// Prompts.
    pub n: usize,
    /// Mean weak quality.
    pub weak: f64,
    /// Mean strong quality.
    pub strong: f64,
    /// Exact APGR (null without a gap).
    pub apgr: Option<f64>,
    /// RouteLLM's 11-point APGR.
    pub apgr11: Option<f64>,
    /// Share of strong calls to recover 50 % of the gap.
    pub cpt50: Option<f64>,
    /// Share of strong calls to recover 80 % of the gap.
    pub cpt80: Option<f64>,
    /// Share sent to Q4 at the threshold.
    pub q4_share: f64,
    /// Mean quality at the threshold.
    pub quality_at_threshold: f64,
    /// The random router's figures.
    pub random: RandomReport,
}

/// A random router on the same prompts.
#[derive(Debug, Clone, Serialize)]
pub struct RandomReport {
    /// Its APGR (0.5 whenever there is a gap).
    pub apgr: Option<f64>,
}

/// `server eval --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `heuristic` or `learned`.
    pub scorer: String,
    /// The Q4 threshold the shares are at.
    pub threshold: f64,
    /// One entry per set, then `all`.
    pub sets: Vec<SetReport>,
}

fn curve(rows: &[&Labelled], scores: &[f64]) -> Option<QualityCurve> {
    let scored: Vec<Scored> = rows
        .iter()
        .zip(scores)
        .map(|(l, &score)| Scored {
            score,
            weak: l.weak,
            strong: l.strong,
        })
        .collect();
    QualityCurve::new(&scored)
}

/// The rows at `idx` and their scores.
fn pick<'a>(data: &'a [Labelled], scores: &[f64], idx: &[usize]) -> (Vec<&'a Labelled>, Vec<f64>) {
    (
        idx.iter().map(|&i| &data[i]).collect(),
        idx.iter().map(|&i| scores[i]).collect(),
    )
}

/// The distinct sets of `data`, sorted.
fn set_names(data: &[Labelled]) -> Vec<&str> {
    let mut names: Vec<&str> = data.iter().map(|l| l.set.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn set_report(name: &str, rows: &[&Labelled], scores: &[f64], threshold: f64) -> SetReport {
    let c = curve(rows, scores).expect("a set has a prompt");
    let random = curve(rows, &vec![0.0; rows.len()]).expect("a set has a prompt");
    let (q4_share, quality) = c.at_threshold(threshold);
    SetReport {
        name: name.to_owned(),
        n: rows.len(),
        weak: c.weak(),
        strong: c.strong(),
        apgr: c.apgr(),
        apgr11: c.apgr11(),
        cpt50: c.cpt(0.5),
        cpt80: c.cpt(0.8),
        q4_share,
        quality_at_threshold: quality,
        random: RandomReport {
            apgr: random.apgr(),
        },
    }
}

/// The sets of `data` (each benchmark in order of first sight), then all.
fn sets(data: &[Labelled]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, l) in data.iter().enumerate() {
        match out.iter_mut().find(|(n, _)| *n == l.set) {
            Some((_, v)) => v.push(i),
            None => out.push((l.set.clone(), vec![i])),
        }
    }
    out.push(("all".into(), (0..data.len()).collect()));
    out
}

/// The figures of `scores` on `data`, per set and for all.
pub fn report(scorer: &str, data: &[Labelled], scores: &[f64], threshold: f64) -> Report {
    let sets = sets(data)
        .into_iter()
        .map(|(name, idx)| {
            let (rows, s) = pick(data, scores, &idx);
            set_report(&name, &rows, &s, threshold)
        })
        .collect();
    Report {
        scorer: scorer.to_owned(),
        threshold,
        sets,
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

/// The report as a table.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "scorer {}, Q4 threshold {}\n{:<24} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>9} {:>10}\n",
        r.scorer,
        r.threshold,
        "set",
        "n",
        "weak",
        "strong",
        "apgr",
        "apgr11",
        "cpt50",
        "cpt80",
        "q4Share",
        "quality@t",
        "randomApgr"
    );
    for s in &r.sets {
        out += &format!(
            "{:<24} {:>6} {:>6.3} {:>6.3} {:>6} {:>7} {:>6} {:>6} {:>8.3} {:>9.3} {:>10}\n",
            s.name,
            s.n,
            s.weak,
            s.strong,
            fmt(s.apgr),
            fmt(s.apgr11),
            fmt(s.cpt50),
            fmt(s.cpt80),
            s.q4_share,
            s.quality_at_threshold,
            fmt(s.random.apgr)
        );
    }
    out
}

/// A plotted line: its label, points and colour.
type Plotted<'a> = (&'a str, Vec<(f64, f64)>, plotters::style::RGBColor);

/// Draws quality against the share of strong calls, one panel per set:
/// the scorer, a random router and the oracle.
pub fn plot(path: &Path, scorer: &str, data: &[Labelled], scores: &[f64]) -> Result<(), String> {
    use plotters::prelude::*;
    let sets = sets(data);
    let err = |e: &dyn std::fmt::Display| format!("{}: cannot draw: {e}", path.display());
    let root = SVGBackend::new(path, (420 * sets.len() as u32, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, sets.len()));
    for ((name, idx), area) in sets.iter().zip(panels.iter()) {
        let (rows, s) = pick(data, scores, idx);
        let oracle: Vec<f64> = rows.iter().map(|l| l.strong - l.weak).collect();
        let (Some(c), Some(o)) = (curve(&rows, &s), curve(&rows, &oracle)) else {
            continue;
        };
        let ys = o.points().iter().map(|p| p.1);
        let (lo, hi) = ys.fold(
            (c.weak().min(c.strong()), c.strong().max(c.weak())),
            |a, y| (a.0.min(y), a.1.max(y)),
        );
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{name} ({} prompts): apgr {}", rows.len(), fmt(c.apgr())),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..1.0, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("share of strong (Q4) calls")
            .y_desc("mean quality")
            .draw()
            .map_err(|e| err(&e))?;
        let lines: [Plotted; 3] = [
            (scorer, c.points().to_vec(), RGBColor(37, 99, 235)),
            (
                "random",
                vec![(0.0, c.weak()), (1.0, c.strong())],
                RGBColor(120, 120, 120),
            ),
            ("oracle", o.points().to_vec(), RGBColor(22, 163, 74)),
        ];
        for (label, pts, color) in lines {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// Cross-validation figures of one scorer on one held-out set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldOut {
    /// What was held out.
    pub name: String,
    /// APGR of the learned scorer trained without it (gap-weighted over folds).
    pub learned: Option<f64>,
    /// APGR of the heuristic on the same prompts (gap-weighted over the same folds).
    pub heuristic: Option<f64>,
    /// APGR of counting words.
    pub words: Option<f64>,
}

fn gap_weighted(folds: &[(Vec<&Labelled>, Vec<f64>)]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (rows, scores) in folds {
        let c = curve(rows, scores)?;
        let gap = c.gap() * rows.len() as f64;
        if let Some(a) = c.apgr() {
            num += a * gap;
            den += gap;
        }
    }
    (den > 0.0).then(|| num / den)
}

/// The 5 folds of `set` that never test on what they trained on: whole
/// subjects when the set has several, else its prompts by line; each
/// fold's training data is everything else (other sets included). Also the
/// set's members, and whether it was split by subject.
#[allow(clippy::type_complexity)]
fn within_folds(data: &[Labelled], set: &str) -> (Vec<usize>, Vec<(Vec<usize>, Vec<usize>)>, bool) {
    let members: Vec<usize> = (0..data.len()).filter(|&i| data[i].set == set).collect();
    let mut subjects: Vec<&str> = members
        .iter()
        .filter_map(|&i| data[i].subject.as_deref())
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    let by_subject = subjects.len() > 1;
    let fold_of = |i: usize| -> usize {
        if by_subject {
            let s = data[i].subject.as_deref().unwrap_or("");
            subjects.binary_search(&s).map_or(0, |p| p % FOLDS)
        } else {
            data[i].line % FOLDS
        }
    };
    let folds = (0..FOLDS)
        .map(|f| {
            let test: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| fold_of(i) == f)
                .collect();
            let train: Vec<usize> = (0..data.len())
                .filter(|&i| data[i].set != set || fold_of(i) != f)
                .collect();
            (train, test)
        })
        .filter(|(_, test)| !test.is_empty())
        .collect();
    (members, folds, by_subject)
}

/// How many folds cross-validation uses.
const FOLDS: usize = 5;

fn examples<'a>(data: &'a [Labelled], idx: &[usize]) -> Vec<Example<'a>> {
    idx.iter()
        .map(|&i| Example {
            prompt: &data[i].prompt,
            gain: data[i].strong - data[i].weak,
            level: &data[i].set,
        })
        .collect()
}

/// Every prompt's score by a model trained without it (its fold of
/// [`within_folds`]), in the order of `data`: what the learned scorer does
/// on prompts it never saw.
pub fn held_out_scores(data: &[Labelled], alpha: f64) -> Vec<f64> {
    let mut scores = vec![0.0; data.len()];
    for set in set_names(data) {
        for (train, test) in within_folds(data, set).1 {
            let model = scorer::train(&examples(data, &train), alpha);
            for i in test {
                scores[i] = model.assess(&data[i].prompt).score;
            }
        }
    }
    scores
}

/// Cross-validation that never tests on what it trained on: for a set with
/// several subjects, 5 folds of whole subjects (each trained on everything
/// else); for a set without, 5 folds of its prompts (by line); and each
/// set held out whole. Each figure weights the folds' APGR by their gap.
pub fn cross_validate(data: &[Labelled], alpha: f64) -> Vec<HeldOut> {
    let mut out = Vec::new();
    let set_names = set_names(data);
    let figures = |name: String, folds: Vec<(Vec<usize>, Vec<usize>)>| {
        let mut per: [Vec<(Vec<&Labelled>, Vec<f64>)>; 3] = Default::default();
        for (train_idx, test_idx) in folds {
            let model = scorer::train(&examples(data, &train_idx), alpha);
            let rows: Vec<&Labelled> = test_idx.iter().map(|&i| &data[i]).collect();
            per[0].push((
                rows.clone(),
                rows.iter().map(|l| model.assess(&l.prompt).score).collect(),
            ));
            per[1].push((
                rows.clone(),
                rows.iter()
                    .map(|l| Scorer::Heuristic.assess(&l.prompt).score)
                    .collect(),
            ));
            per[2].push((
                rows.clone(),
                rows.iter()
                    .map(|l| l.prompt.split_whitespace().count() as f64)
                    .collect(),
            ));
        }
        HeldOut {
            name,
            learned: gap_weighted(&per[0]),
            heuristic: gap_weighted(&per[1]),
            words: gap_weighted(&per[2]),
        }
    };
    for set in &set_names {
        let (members, folds, by_subject) = within_folds(data, set);
        let what = if by_subject { "subjects" } else { "prompts" };
        out.push(figures(format!("{set}: held-out {what}"), folds));
        if set_names.len() > 1 {
            let train: Vec<usize> = (0..data.len()).filter(|&i| data[i].set != *set).collect();
            out.push(figures(
                format!("{set}: whole set held out"),
                vec![(train, members)],
            ));
        }
    }
    out
}

/// Reads every `--data` file; an error names the file and line.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<Labelled>, String> {
    let mut out = Vec::new();
    for f in files {
        out.extend(load(f)?);
    }
    Ok(out)
}

/// Trains on `data` (see [`scorer`]), with every prompt's held-out score.
pub fn train(data: &[Labelled], alpha: f64) -> scorer::LearnedModel {
    let all: Vec<usize> = (0..data.len()).collect();
    let mut model = scorer::train(&examples(data, &all), alpha);
    model.held_out = held_out_scores(data, alpha);
    model
}

/// The scores-out lines: `{"file", "line", "score"}` per prompt.
pub fn scores_out(data: &[Labelled], scores: &[f64]) -> String {
    let mut out = String::new();
    for (l, s) in data.iter().zip(scores) {
        out += &serde_json::json!({"file": l.file, "line": l.line, "score": s}).to_string();
        out.push('\n');
    }
    out
}

/// The Q4 threshold in use and the quality expected at it: `target` (a
/// share of the gap, `--quality-target`) chooses the threshold on the
/// labelled data's curve, else `threshold` (`--q4-threshold`) stands.
pub fn expected(
    data: Option<&Path>,
    scorer: Scorer,
    threshold: f64,
    target: Option<f64>,
) -> Result<(f64, shared::quality::ExpectedQuality), String> {
    let (name, rows) = match data {
        Some(p) => (p.display().to_string(), load(p)?),
        None => (EMBEDDED_NAME.to_owned(), embedded()),
    };
    // The learned scorer was trained on the embedded set: there, each
    // prompt counts with the score a model trained without it gave it.
    let held_out = &scorer::embedded().held_out;
    let use_held_out = data.is_none() && scorer == Scorer::Learned && held_out.len() == rows.len();
    let scores: Vec<f64> = if use_held_out {
        held_out.clone()
    } else {
        rows.iter()
            .map(|l| scorer.assess(&l.prompt).score)
            .collect()
    };
    let all: Vec<&Labelled> = rows.iter().collect();
    let c = curve(&all, &scores).expect("load refuses an empty file");
    let threshold = match target {
        Some(g) => c.threshold_for(g, shared::MAX_SCORE),
        None => threshold,
    };
    let source = shared::quality::QualitySource {
        name: if use_held_out {
            format!("{name} (held-out scores)")
        } else {
            name
        },
        prompts: rows.len() as u64,
    };
    Ok((threshold, c.expected(threshold, source)))
}

/// `server eval`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "server eval",
    about = "Routing quality of a scorer on labelled prompts (JSON Lines)"
)]
pub struct EvalArgs {
    /// A labelled JSON Lines file; repeatable.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// The scorer to measure.
    #[arg(long, value_enum, default_value_t = Scorer::Learned)]
    pub scorer: Scorer,
    /// `text` (a table) or `json` (one object).
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub format: String,
    /// The Q4 threshold the shares and quality at threshold are for.
    #[arg(long, default_value_t = shared::insight::DEFAULT_Q4_THRESHOLD)]
    pub q4_threshold: f64,
    /// Writes `{"file", "line", "score"}` per prompt here.
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
    /// Draws quality against strong-call share here (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// With `--scorer learned` on the shipped file only: each prompt's
    /// score by a model trained without its fold (whole subjects), the
    /// cross-validated figures, instead of the embedded model's own
    /// (which was trained on these very prompts).
    #[arg(long)]
    pub held_out: bool,
}

/// `server train`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "server train",
    about = "Trains the learned scorer on labelled prompts (JSON Lines)"
)]
pub struct TrainArgs {
    /// A labelled JSON Lines file; repeatable.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Where to write the model (JSON).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The ridge penalty.
    #[arg(long, default_value_t = scorer::ALPHA)]
    pub alpha: f64,
    /// Prints held-out figures instead (see [`cross_validate`]), as JSON.
    #[arg(long)]
    pub cross_validate: bool,
}

/// Runs `server eval` or `server train` when `args` ask for one; the exit status.
pub fn run(args: &[std::ffi::OsString]) -> Option<i32> {
    use clap::Parser as _;
    let which = args.get(1)?.to_str()?;
    let rest =
        || std::iter::once(format!("server {which}").into()).chain(args[2..].iter().cloned());
    let result = match which {
        "eval" => match EvalArgs::try_parse_from(rest()) {
            Ok(a) => run_eval(a),
            Err(e) => e.exit(),
        },
        "train" => match TrainArgs::try_parse_from(rest()) {
            Ok(a) => run_train(a),
            Err(e) => e.exit(),
        },
        _ => return None,
    };
    Some(match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("error: {msg}");
            2
        }
    })
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

fn run_eval(a: EvalArgs) -> Result<(), String> {
    if !shared::insight::valid_threshold(a.q4_threshold) {
        return Err(format!(
            "--q4-threshold must be in 0..=15, got {}",
            a.q4_threshold
        ));
    }
    let data = load_all(&a.data)?;
    let (name, scores) = if a.held_out {
        let shipped =
            a.data.len() == 1 && std::fs::read_to_string(&a.data[0]).is_ok_and(|t| t == EMBEDDED);
        if a.scorer != Scorer::Learned || !shipped {
            return Err("--held-out needs --scorer learned and the shipped file \
                 (datasets/routing-quality/labelled.jsonl) as the only --data"
                .into());
        }
        ("learned (held-out)", scorer::embedded().held_out.clone())
    } else {
        let scores = data
            .iter()
            .map(|l| a.scorer.assess(&l.prompt).score)
            .collect();
        (a.scorer.name(), scores)
    };
    let r = report(name, &data, &scores, a.q4_threshold);
    if let Some(p) = &a.scores_out {
        write(p, &scores_out(&data, &scores))?;
    }
    if let Some(p) = &a.plot {
        plot(p, name, &data, &scores)?;
    }
    if a.format == "json" {
        println!(
            "{}",
            serde_json::to_string(&r).expect("finite numbers serialise")
        );
    } else {
        print!("{}", text(&r));
    }
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<(), String> {
    if !(a.alpha.is_finite() && a.alpha > 0.0) {
        return Err(format!("--alpha must be above 0, got {}", a.alpha));
    }
    let data = load_all(&a.data)?;
    if a.cross_validate {
        let figures = cross_validate(&data, a.alpha);
        println!(
            "{}",
            serde_json::to_string_pretty(&figures).expect("serialises")
        );
        return Ok(());
    }
    let model = train(&data, a.alpha);
    let json = serde_json::to_string(&model).expect("finite numbers serialise") + "\n";
    match &a.out {
        Some(p) => write(p, &json),
        None => {
            print!("{json}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("f.jsonl", "f", text).unwrap_err()
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let ok = r#"{"prompt": "a", "weak": 0, "strong": 1}"#;
        assert_eq!(err(""), "f.jsonl: no labelled prompts");
        assert!(err(&format!("{ok}\nnot json")).starts_with("f.jsonl:2: not a JSON object"));
        assert_eq!(
            err(&format!("{ok}\n{{\"prompt\": \"b\", \"strong\": 1}}")),
            "f.jsonl:2: `weak` is missing"
        );
        assert!(
            err(r#"{"prompt": "b", "weak": "NaN", "strong": 1}"#)
                .starts_with("f.jsonl:1: `weak` must be a finite number")
        );
        assert!(
            err(r#"{"prompt": "b", "weak": 1e999, "strong": 1}"#)
                .starts_with("f.jsonl:1: not a JSON object")
        );
        assert!(err(r#"{"prompt": "b", "weak": 1, "strong": 1}"#).contains("no quality gap"));
    }

    #[test]
    fn the_shipped_data_reads_and_every_prompt_sums_to_its_score() {
        let data = embedded();
        assert_eq!(data.len(), 10_569);
        for l in &data {
            for scorer in [Scorer::Learned, Scorer::Heuristic] {
                let a = scorer.assess(&l.prompt);
                let sum: f64 = a.signals.iter().map(|s| s.weight).sum();
                assert!((sum - a.score).abs() < 1e-9, "{}:{} {a:?}", l.file, l.line);
                assert!((0.0..=shared::MAX_SCORE).contains(&a.score));
                assert!(shared::insight::validate_signals(&a.signals).is_ok());
            }
        }
    }

    #[test]
    fn a_constant_scorer_is_random_and_an_oracle_above_one() {
        let data = embedded();
        let constant = report("constant", &data, &vec![1.0; data.len()], 7.0);
        let oracle: Vec<f64> = data.iter().map(|l| l.strong - l.weak).collect();
        let oracle = report("oracle", &data, &oracle, 7.0);
        for s in &constant.sets {
            assert!((s.apgr.unwrap() - 0.5).abs() < 1e-9, "{s:?}");
            assert!((s.random.apgr.unwrap() - 0.5).abs() < 1e-9);
        }
        for s in &oracle.sets {
            assert!(s.apgr.unwrap() > 1.0, "{s:?}");
        }
        assert_eq!(constant.sets.last().unwrap().name, "all");
    }
}
