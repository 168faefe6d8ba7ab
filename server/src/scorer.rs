//! The learned scorer: a linear model trained on labelled prompts, which
//! explains itself the way a linear model does (each feature's
//! contribution is a signal, and the signals sum to the score).
//!
//! Features of a prompt:
//!
//! | feature | what it reads |
//! | --- | --- |
//! | length | ln(1 + words) |
//! | option length | ln(1 + mean words of its `A.`..`D.` option lines), 0 without options |
//! | digits | the share of digits among the characters outside the options |
//! | sentences | ln(1 + sentence ends) |
//! | decimals | ln(1 + numbers with a decimal point) |
//! | operators | ln(1 + `=`, `+`, `*`, `/`, `^`, `<`, `>`) |
//! | words | each distinct lowercase word of two letters or more, and each pair of such words in a row, hashed (xxh3) into 16,384 buckets |
//!
//! The six dense features are standardised on the training data, so an
//! average prompt has 0 from each. Training is ridge regression (conjugate
//! gradients, a fixed order of operations: the same data gives the same
//! model, byte for byte) of the gain of the strong model over the weak one
//! (`strong - weak`) on those features, with one level per benchmark (scaled
//! so the penalty barely touches it) (so the model learns what makes a prompt hard within a
//! benchmark, not which benchmark is harder). The raw prediction is then
//! mapped linearly onto the score scale so that on the training prompts its
//! 10th percentile scores 3 (MODERATE from there) and its 70th scores 7 (the
//! default Q4 threshold): about 30 % of them go to Q4 by default.
//!
//! The labelled data is multiple choice and grade-school maths: it has
//! nothing to say of code, design or proofs. So the learned scorer keeps
//! the heuristic's keyword signals (demanding verbs, technical vocabulary,
//! several parts, code, constraints: see [`crate::routing`]) at their
//! hand-set points, added to the learned part (measured: on the held-out
//! folds they cost MMLU 0.002 of APGR and gain GSM8K 0.003).
//!
//! Signals: `base` (the score of a prompt with no words and every dense
//! feature 0), one per dense feature the prompt has, the three words or
//! pairs that moved the score most (`word "integral"`, `words "how many"`),
//! the rest as `other words`, the kept keyword signals, and a cap at 0 or
//! 15 when the sum leaves the scale.

use crate::heuristic::{Assessment, hundredths, on_the_scale};
use serde::{Deserialize, Serialize};
use shared::Signal;
use std::sync::OnceLock;

/// How many buckets the words are hashed into.
pub const WORD_BUCKETS: usize = 16384;
/// The ridge penalty.
pub const ALPHA: f64 = 3000.0;
/// The dense features' names, in order.
pub const DENSE: [&str; 6] = [
    "length",
    "option length",
    "digits",
    "sentences",
    "decimals",
    "operators",
];
/// The heuristic's signals the learned scorer keeps, at their points.
pub const KEPT_HEURISTIC: [&str; 5] = [
    "demanding verbs",
    "technical vocabulary",
    "several parts",
    "code",
    "constraints",
];
/// Named words among the signals (the rest are summed).
const NAMED_WORDS: usize = 3;

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedModel {
    /// The model's format.
    pub format: u32,
    /// What it was trained on: prompts and their benchmarks.
    pub trained_on: TrainedOn,
    /// The ridge penalty it was trained with.
    pub alpha: f64,
    /// Mean of each dense feature on the training prompts.
    pub means: [f64; 6],
    /// Standard deviation of each dense feature (1 where it was 0).
    pub stds: [f64; 6],
    /// Weight of each standardised dense feature.
    pub dense: [f64; 6],
    /// Weight of each word bucket.
    pub words: Vec<f64>,
    /// Score = `offset + scale * raw prediction`.
    pub offset: f64,
    /// See `offset`.
    pub scale: f64,
    /// Each training prompt's score by a model trained without it (5 folds
    /// of whole subjects, or of prompts for a set without subjects), in
    /// the training data's order: the status's expected quality for the
    /// embedded set uses these, not the flattering in-sample scores.
    #[serde(default)]
    pub held_out: Vec<f64>,
}

/// The training data a model was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainedOn {
    /// How many labelled prompts.
    pub prompts: usize,
    /// The benchmarks (levels) they came from.
    pub benchmarks: Vec<String>,
}

/// The model shipped in the binary (`server/model/learned.json`, made by
/// `scripts/train.sh` from the shipped labelled data).
pub fn embedded() -> &'static LearnedModel {
    static MODEL: OnceLock<LearnedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        serde_json::from_str(include_str!("../model/learned.json"))
            .expect("the embedded model is valid: a unit test parses it")
    })
}

/// The features of a prompt: the six dense values and its distinct word buckets.
pub struct Features {
    dense: [f64; 6],
    /// The prompt in lowercase, which `words` point into.
    lower: String,
    /// (bucket, the word or pair that hashed there first), sorted by
    /// bucket, distinct.
    words: Vec<(u32, Term)>,
}

/// A word of [`Features::lower`] (its byte range), or a pair of words in
/// a row: named only when it becomes a signal, so a prompt's words cost no
/// allocation each.
#[derive(Clone, Copy)]
struct Term {
    word: (usize, usize),
    after: Option<(usize, usize)>,
}

impl Features {
    /// The bytes of a term's text: `word`, or `first second` for a pair.
    fn bytes(&self, t: Term) -> impl Iterator<Item = u8> + '_ {
        let first = t.after.map(|(a, b)| &self.lower.as_bytes()[a..b]);
        let word = &self.lower.as_bytes()[t.word.0..t.word.1];
        first
            .into_iter()
            .flat_map(|f| f.iter().copied().chain([b' ']))
            .chain(word.iter().copied())
    }

    /// The text of a term (cut at characters, so never lossy).
    fn text(&self, t: Term) -> String {
        let bytes: Vec<u8> = self.bytes(t).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Whether a line is a multiple-choice option: `A. text` .. `D. text`.
fn option_text(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    if b.len() >= 3 && (b'A'..=b'D').contains(&b[0]) && b[1] == b'.' && b[2] == b' ' {
        Some(&line[3..])
    } else {
        None
    }
}

/// The features of `text`.
pub fn features(text: &str) -> Features {
    let mut words_n = 0usize;
    let mut option_words = 0usize;
    let mut options = 0usize;
    let mut chars = 0usize;
    let mut digits = 0usize;
    let mut sentences = 0usize;
    let mut decimals = 0usize;
    let mut operators = 0usize;
    for line in text.lines() {
        let option = option_text(line);
        if let Some(o) = option {
            options += 1;
            option_words += o.split_whitespace().count();
        }
        words_n += line.split_whitespace().count();
        if option.is_some() {
            continue;
        }
        let mut prev: Option<char> = None;
        let mut iter = line.chars().peekable();
        while let Some(c) = iter.next() {
            chars += 1;
            let next = iter.peek().copied();
            if c.is_ascii_digit() {
                digits += 1;
            } else if matches!(c, '=' | '+' | '*' | '/' | '^' | '<' | '>') {
                operators += 1;
            } else if matches!(c, '.' | '?' | '!') && next.is_none_or(char::is_whitespace) {
                sentences += 1;
            }
            // A decimal number: a digit, a point, a digit (counted at the point).
            if c == '.'
                && prev.is_some_and(|p| p.is_ascii_digit())
                && next.is_some_and(|n| n.is_ascii_digit())
            {
                decimals += 1;
            }
            prev = Some(c);
        }
    }
    let option_len = if options > 0 {
        (option_words as f64 / options as f64).ln_1p()
    } else {
        0.0
    };
    let digit_share = if chars > 0 {
        digits as f64 / chars as f64
    } else {
        0.0
    };
    let dense = [
        (words_n as f64).ln_1p(),
        option_len,
        digit_share,
        (sentences as f64).ln_1p(),
        (decimals as f64).ln_1p(),
        (operators as f64).ln_1p(),
    ];
    let mut words: Vec<(u32, Term)> = Vec::new();
    let lower = text.to_lowercase();
    let bucket = |t: &[u8]| (xxhash_rust::xxh3::xxh3_64(t) % WORD_BUCKETS as u64) as u32;
    // A pair is hashed as `first second`, written here, one buffer for all.
    let mut pair = Vec::new();
    let mut prev: Option<(usize, usize)> = None;
    let mut start = 0;
    for w in lower.split(|c: char| !c.is_alphabetic()) {
        let span = (start, start + w.len());
        // Past the word and the one-character separator `split` took.
        start = span.1 + lower[span.1..].chars().next().map_or(0, char::len_utf8);
        if w.chars().nth(1).is_none() {
            continue;
        }
        let word = Term {
            word: span,
            after: None,
        };
        words.push((bucket(w.as_bytes()), word));
        if let Some(p) = prev {
            pair.clear();
            pair.extend_from_slice(&lower.as_bytes()[p.0..p.1]);
            pair.push(b' ');
            pair.extend_from_slice(w.as_bytes());
            let after = Some(p);
            words.push((bucket(&pair), Term { after, ..word }));
        }
        prev = Some(span);
    }
    // Stable: of the words in one bucket the first in the text names it.
    words.sort_by_key(|w| w.0);
    words.dedup_by_key(|w| w.0);
    Features {
        dense,
        lower,
        words,
    }
}

/// At most 32 characters: `word "…"` (or `words "…"` for a pair) with
/// the text cut to fit.
fn word_signal(word: &str) -> String {
    let what = if word.contains(' ') {
        "words \""
    } else {
        "word \""
    };
    let mut name = String::with_capacity(what.len() + word.len().min(96) + 1);
    name.push_str(what);
    name.extend(word.chars().take(24));
    name.push('"');
    name
}

impl LearnedModel {
    /// The raw prediction (the expected gain of the strong model) of features.
    fn raw(&self, f: &Features) -> f64 {
        let dense: f64 = (0..6).map(|k| self.dense_part(f, k)).sum();
        dense
            + f.words
                .iter()
                .map(|(b, _)| self.words[*b as usize])
                .sum::<f64>()
    }

    fn dense_part(&self, f: &Features, k: usize) -> f64 {
        self.dense[k] * (f.dense[k] - self.means[k]) / self.stds[k]
    }

    /// The score of a prompt whose every feature is 0 (no words, no
    /// options, no digits...): what the signals start from, so a feature a
    /// prompt lacks adds nothing and is not listed.
    fn base(&self) -> f64 {
        self.offset
            - self.scale
                * (0..6)
                    .map(|k| self.dense[k] * self.means[k] / self.stds[k])
                    .sum::<f64>()
    }

    /// The score of `text` (0..=15) and the signals that sum to it.
    pub fn assess(&self, text: &str) -> Assessment {
        // Nothing to read (an image alone, punctuation): the lowest score,
        // as the heuristic gives it, not the base of an empty prompt.
        if !text.chars().any(char::is_alphanumeric) {
            return Assessment {
                score: 0.0,
                signals: Vec::new(),
            };
        }
        let f = features(text);
        let mut signals = vec![Signal::new("base", hundredths(self.base()))];
        for (k, name) in DENSE.iter().enumerate() {
            let points = hundredths(self.scale * self.dense[k] * f.dense[k] / self.stds[k]);
            if points != 0.0 {
                signals.push(Signal::new(name, points));
            }
        }
        let mut words: Vec<(f64, Term)> = f
            .words
            .iter()
            .map(|(b, t)| (self.scale * self.words[*b as usize], *t))
            .collect();
        // Largest effect first; equal effects by word, so the order is fixed.
        words.sort_by(|a, b| {
            b.0.abs()
                .total_cmp(&a.0.abs())
                .then_with(|| f.bytes(a.1).cmp(f.bytes(b.1)))
        });
        let mut rest = 0.0;
        for (i, (points, word)) in words.iter().enumerate() {
            let p = hundredths(*points);
            if i < NAMED_WORDS && p != 0.0 {
                signals.push(Signal {
                    name: word_signal(&f.text(*word)),
                    weight: p,
                });
            } else {
                rest += points;
            }
        }
        let rest = hundredths(rest);
        if rest != 0.0 {
            signals.push(Signal::new("other words", rest));
        }
        // What the labelled data cannot teach (it is multiple choice and
        // maths): the heuristic's keyword signals, at their hand-set points.
        signals.extend(
            crate::heuristic::assess(text)
                .signals
                .into_iter()
                .filter(|s| KEPT_HEURISTIC.contains(&s.name.as_str())),
        );
        on_the_scale(signals)
    }
}

/// One labelled prompt for training.
pub struct Example<'a> {
    /// The text.
    pub prompt: &'a str,
    /// The gain of the strong model over the weak one.
    pub gain: f64,
    /// Its level (benchmark, or the file's name).
    pub level: &'a str,
}

/// Trains a model on `examples` with ridge penalty `alpha`.
pub fn train(examples: &[Example<'_>], alpha: f64) -> LearnedModel {
    let feats: Vec<Features> = examples.iter().map(|e| features(e.prompt)).collect();
    let n = examples.len().max(1) as f64;
    let mut means = [0.0; 6];
    let mut stds = [0.0; 6];
    for k in 0..6 {
        means[k] = feats.iter().map(|f| f.dense[k]).sum::<f64>() / n;
        let var = feats
            .iter()
            .map(|f| (f.dense[k] - means[k]).powi(2))
            .sum::<f64>()
            / n;
        stds[k] = if var > 0.0 { var.sqrt() } else { 1.0 };
    }
    let mut levels: Vec<&str> = examples.iter().map(|e| e.level).collect();
    levels.sort_unstable();
    levels.dedup();
    // Columns: 6 dense, the word buckets, one per level (its own scale, so
    // the penalty barely touches it).
    const LEVEL_SCALE: f64 = 100.0;
    let dim = 6 + WORD_BUCKETS + levels.len();
    let rows: Vec<Vec<(usize, f64)>> = examples
        .iter()
        .zip(&feats)
        .map(|(e, f)| {
            let mut row: Vec<(usize, f64)> = (0..6)
                .map(|k| (k, (f.dense[k] - means[k]) / stds[k]))
                .collect();
            row.extend(f.words.iter().map(|(b, _)| (6 + *b as usize, 1.0)));
            let level = levels.binary_search(&e.level).expect("listed above");
            row.push((6 + WORD_BUCKETS + level, LEVEL_SCALE));
            row
        })
        .collect();
    let y: Vec<f64> = examples.iter().map(|e| e.gain).collect();
    let w = ridge(&rows, &y, dim, alpha);
    let mut model = LearnedModel {
        format: 1,
        trained_on: TrainedOn {
            prompts: examples.len(),
            benchmarks: levels.iter().map(|l| l.to_string()).collect(),
        },
        alpha,
        means,
        stds,
        dense: std::array::from_fn(|k| w[k]),
        words: w[6..6 + WORD_BUCKETS].to_vec(),
        offset: 0.0,
        scale: 1.0,
        held_out: Vec::new(),
    };
    // The scale: the training prompts' 10th percentile at 3, 70th at 7.
    let mut raws: Vec<f64> = feats.iter().map(|f| model.raw(f)).collect();
    raws.sort_by(f64::total_cmp);
    let at = |q: f64| raws[((raws.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.1), at(0.7));
    let scale = if hi > lo { 4.0 / (hi - lo) } else { 1.0 };
    model.scale = scale;
    model.offset = 3.0 - scale * lo;
    model
}

/// Solves (XᵀX + αI) w = Xᵀy by conjugate gradients, X given by sparse
/// rows. A fixed number of steps at most and a fixed order of sums: the
/// same input gives the same bits.
fn ridge(rows: &[Vec<(usize, f64)>], y: &[f64], dim: usize, alpha: f64) -> Vec<f64> {
    let apply = |v: &[f64]| -> Vec<f64> {
        let mut out: Vec<f64> = v.iter().map(|x| alpha * x).collect();
        for row in rows {
            let dot: f64 = row.iter().map(|&(j, x)| x * v[j]).sum();
            for &(j, x) in row {
                out[j] += x * dot;
            }
        }
        out
    };
    let mut b = vec![0.0; dim];
    for (row, &t) in rows.iter().zip(y) {
        for &(j, x) in row {
            b[j] += x * t;
        }
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut w = vec![0.0; dim];
    let mut r = b.clone();
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let stop = rr * 1e-20;
    for _ in 0..1000 {
        if rr <= stop {
            break;
        }
        let ap = apply(&p);
        let step = rr / dot(&p, &ap);
        for j in 0..dim {
            w[j] += step * p[j];
            r[j] -= step * ap[j];
        }
        let next = dot(&r, &r);
        let beta = next / rr;
        rr = next;
        for j in 0..dim {
            p[j] = r[j] + beta * p[j];
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_parses_and_fits_the_features() {
        let m = embedded();
        assert_eq!(m.words.len(), WORD_BUCKETS);
        assert!(m.scale > 0.0 && m.scale.is_finite());
        assert!(m.stds.iter().all(|s| *s > 0.0));
    }

    #[test]
    fn features_read_options_digits_and_decimals() {
        let f = features("What is 2.5 + 3?\nA. 5.5\nB. 6\nC. 1 2\nD. 0");
        assert_eq!(f.dense[0], 14f64.ln_1p());
        assert_eq!(f.dense[1], (5.0f64 / 4.0).ln_1p());
        assert_eq!(f.dense[4], 1f64.ln_1p());
        assert_eq!(f.dense[5], 1f64.ln_1p());
        assert_eq!(f.dense[3], 1f64.ln_1p());
        assert!(f.dense[2] > 0.0);
        // One bucket per distinct word and pair: "what", "is", "what is".
        let mut names: Vec<String> = f.words.iter().map(|w| f.text(w.1)).collect();
        names.sort_unstable();
        assert_eq!(names, ["is", "what", "what is"]);
    }

    #[test]
    fn training_is_reproducible_and_learns_the_gain() {
        let mut data = Vec::new();
        for i in 0..200 {
            let hard = i % 2 == 0;
            let prompt = if hard {
                format!("Compute the integral of x^{i} from 0 to {}.", i + 1)
            } else {
                format!("Name the capital of country number {i}")
            };
            data.push((prompt, if hard { 1.0 } else { 0.0 }));
        }
        let examples: Vec<Example> = data
            .iter()
            .map(|(p, g)| Example {
                prompt: p,
                gain: *g,
                level: "toy",
            })
            .collect();
        let a = train(&examples, 10.0);
        let b = train(&examples, 10.0);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let hard = a.assess("Compute the integral of x^3 from 0 to 9.");
        let easy = a.assess("Name the capital of country number 12");
        assert!(hard.score > easy.score, "{hard:?} {easy:?}");
    }

    #[test]
    fn signals_sum_to_the_score_and_stay_on_the_scale() {
        let m = embedded();
        assert_eq!(m.assess("").score, 0.0);
        assert_eq!(m.assess(" ?! ").signals, vec![]);
        for text in [
            "",
            "hi",
            "What is Python?",
            &"Prove the theorem 3.14 * 2 = 6.28. ".repeat(300),
        ] {
            let a = m.assess(text);
            let sum: f64 = a.signals.iter().map(|s| s.weight).sum();
            assert!((sum - a.score).abs() < 1e-9, "{a:?}");
            assert!((0.0..=shared::MAX_SCORE).contains(&a.score));
            assert!(
                shared::insight::validate_signals(&a.signals).is_ok(),
                "{a:?}"
            );
        }
    }
}
