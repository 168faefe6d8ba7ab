//! Routing quality: what a scorer's ranking is worth on labelled prompts.
//!
//! Each labelled prompt carries the quality of the weak model's answer and
//! of the strong model's (0/1 correctness, or a judge's score). A router
//! that sends the prompts scoring highest to the strong model traces a
//! curve of mean quality against the share of strong calls, from the weak
//! model's mean (no strong call) to the strong model's (all strong calls).
//! APGR (average performance gap recovered, RouteLLM's measure) is the area
//! under that curve, normalised so that the always-weak line is 0, the
//! always-strong line 1 and a random router 0.5. An oracle, which sends
//! exactly the prompts where strong beats weak, can exceed 1.
//!
//! The curve is exact: one point per distinct score, and a block of tied
//! scores routed fractionally (linearly inside the block), so a scorer that
//! gives every prompt the same score is exactly the random router.

use crate::MAX_SCORE;
use crate::insight::CURVE_STEP;
use serde::{Deserialize, Serialize};

/// One labelled prompt as a curve needs it: its score and the two qualities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The scorer's score (higher: more worth the strong model).
    pub score: f64,
    /// The weak model's quality on the prompt.
    pub weak: f64,
    /// The strong model's quality on the prompt.
    pub strong: f64,
}

/// The quality curve of a scorer on a set of labelled prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityCurve {
    /// Prompts, by score descending (ties in input order).
    sorted: Vec<Scored>,
    /// (share of strong calls, mean quality), from (0, weak) to (1, strong),
    /// one point after each block of tied scores.
    points: Vec<(f64, f64)>,
    weak: f64,
    strong: f64,
}

/// The value at share `x` (clamped to 0..=1) of the line through `points`
/// (sorted by share; at a repeated share, the last point's value), linear
/// between them; `None` without points.
pub(crate) fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let x = x.clamp(0.0, 1.0);
    let k = points.partition_point(|p| p.0 < x);
    if k == 0 {
        return points.first().map(|p| p.1);
    }
    let (x0, y0) = points[k - 1];
    let (x1, y1) = points[k.min(points.len() - 1)];
    if x1 <= x0 || x >= x1 {
        return Some(y1);
    }
    Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
}

impl QualityCurve {
    /// The curve of these prompts; `None` when there are none.
    pub fn new(prompts: &[Scored]) -> Option<Self> {
        if prompts.is_empty() {
            return None;
        }
        let n = prompts.len() as f64;
        let mut sorted = prompts.to_vec();
        // Stable: ties keep their input order, which a tie block ignores anyway.
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
        let weak = sorted.iter().map(|p| p.weak).sum::<f64>() / n;
        let strong = sorted.iter().map(|p| p.strong).sum::<f64>() / n;
        let mut points = vec![(0.0, weak)];
        let mut gained = 0.0;
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i;
            while j < sorted.len() && sorted[j].score == sorted[i].score {
                gained += sorted[j].strong - sorted[j].weak;
                j += 1;
            }
            points.push((j as f64 / n, weak + gained / n));
            i = j;
        }
        Some(QualityCurve {
            sorted,
            points,
            weak,
            strong,
        })
    }

    /// Mean quality of the weak model (no strong call).
    pub fn weak(&self) -> f64 {
        self.weak
    }

    /// Mean quality of the strong model (every call strong).
    pub fn strong(&self) -> f64 {
        self.strong
    }

    /// How many prompts.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Never: a curve has at least one prompt.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The gap between the two models; APGR needs it above zero.
    pub fn gap(&self) -> f64 {
        self.strong - self.weak
    }

    /// The curve's points: (share of strong calls, mean quality).
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// Mean quality when a share `x` (0..=1) of the prompts, the highest
    /// scoring, go to the strong model (linear inside a tie block).
    pub fn quality_at_share(&self, x: f64) -> f64 {
        interpolate(&self.points, x).unwrap_or(self.weak)
    }

    /// APGR: the trapezoid area under the curve, normalised so the weak
    /// line is 0 and the strong line 1. `None` when the gap is not positive.
    pub fn apgr(&self) -> Option<f64> {
        let gap = self.gap();
        if gap <= 0.0 || !gap.is_finite() {
            return None;
        }
        let area: f64 = self
            .points
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * ((w[0].1 + w[1].1) / 2.0 - self.weak))
            .sum();
        Some(area / gap)
    }

    /// RouteLLM's 11-point APGR (`evals/evaluate.py`): thresholds at the
    /// score deciles, each routing the prompts scoring at or above it to
    /// the strong model, the gap recovered at each averaged by the
    /// trapezoid rule over the strong-call shares they give.
    pub fn apgr11(&self) -> Option<f64> {
        let gap = self.gap();
        if gap <= 0.0 || !gap.is_finite() {
            return None;
        }
        let n = self.sorted.len();
        // Scores ascending, to take the deciles as numpy's linear percentile does.
        let mut asc: Vec<f64> = self.sorted.iter().map(|p| p.score).collect();
        asc.reverse();
        let mut pts: Vec<(f64, f64)> = (0..=10)
            .map(|i| {
                let pos = i as f64 / 10.0 * (n - 1) as f64;
                let lo = pos.floor() as usize;
                let hi = pos.ceil() as usize;
                let t = asc[lo] + (asc[hi] - asc[lo]) * (pos - lo as f64);
                let (share, quality) = self.at_threshold(t);
                (share, self.recovered(quality))
            })
            .collect();
        pts.push((0.0, 0.0));
        pts.push((1.0, 1.0));
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        Some(
            pts.windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum(),
        )
    }

    /// The smallest share of strong calls that recovers `fraction` of the
    /// gap (CPT(50 %) is `cpt(0.5)`); `None` when the curve never does or
    /// the gap is not positive.
    pub fn cpt(&self, fraction: f64) -> Option<f64> {
        let gap = self.gap();
        if gap <= 0.0 {
            return None;
        }
        let want = self.weak + fraction * gap;
        for w in self.points.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if y0 >= want - 1e-12 {
                return Some(x0);
            }
            if y1 >= want - 1e-12 {
                return Some(x0 + (x1 - x0) * (want - y0) / (y1 - y0));
            }
        }
        None
    }

    /// (share sent to the strong model, mean quality) when every prompt
    /// scoring at or above `threshold` goes to it: a threshold routes whole
    /// tie blocks, never a fraction.
    pub fn at_threshold(&self, threshold: f64) -> (f64, f64) {
        let k = self.sorted.partition_point(|p| p.score >= threshold);
        let n = self.sorted.len() as f64;
        let gained: f64 = self.sorted[..k].iter().map(|p| p.strong - p.weak).sum();
        (k as f64 / n, self.weak + gained / n)
    }

    /// The share of the gap recovered at `threshold` (0 when there is no gap).
    pub fn gap_recovered_at(&self, threshold: f64) -> f64 {
        self.recovered(self.at_threshold(threshold).1)
    }

    /// The share of the gap a mean quality recovers (0 when there is no gap).
    fn recovered(&self, quality: f64) -> f64 {
        let gap = self.gap();
        if gap <= 0.0 {
            return 0.0;
        }
        (quality - self.weak) / gap
    }

    /// The threshold whose gap recovered is closest to `target`; of equally
    /// close ones the highest (the fewest strong calls). Candidates are the
    /// distinct scores (each sends itself and all above to the strong model)
    /// and one above every score (no strong call).
    pub fn threshold_for(&self, target: f64, above_all: f64) -> f64 {
        let n = self.sorted.len() as f64;
        let mut best = (above_all, (self.gap_recovered_at(above_all) - target).abs());
        // One pass, the gain summed as the threshold falls block by block.
        let mut gained = 0.0;
        let mut i = 0;
        while i < self.sorted.len() {
            let t = self.sorted[i].score;
            while i < self.sorted.len() && self.sorted[i].score == t {
                gained += self.sorted[i].strong - self.sorted[i].weak;
                i += 1;
            }
            let off = (self.recovered(self.weak + gained / n) - target).abs();
            if off < best.1 - 1e-12 {
                best = (t, off);
            }
        }
        best.0
    }

    /// The expected quality at `threshold`, for the status.
    pub fn expected(&self, threshold: f64, source: QualitySource) -> ExpectedQuality {
        let point = |threshold: f64| {
            let (q4_share, quality) = self.at_threshold(threshold);
            (q4_share, quality, self.recovered(quality))
        };
        let (q4_share, quality, gap_recovered) = point(threshold);
        // The thresholds of the calibrate endpoint's curve, so the two line up.
        let steps = (MAX_SCORE / CURVE_STEP) as usize;
        ExpectedQuality {
            gap_recovered,
            q4_share,
            quality_at_threshold: quality,
            weak: self.weak,
            strong: self.strong,
            source,
            curve: (0..=steps)
                .map(|i| {
                    let t = i as f64 * CURVE_STEP;
                    let (q4_share, _, gap_recovered) = point(t);
                    QualityPoint {
                        threshold: t,
                        q4_share,
                        gap_recovered,
                    }
                })
                .collect(),
        }
    }
}

/// Where an expected quality was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QualitySource {
    /// The labelled data's name (`embedded:labelled.jsonl`, or the file's path).
    #[cfg_attr(feature = "openapi", schema(example = "embedded:labelled.jsonl"))]
    pub name: String,
    /// How many labelled prompts it holds.
    #[cfg_attr(feature = "openapi", schema(example = 10569))]
    pub prompts: u64,
}

/// One threshold of the expected-quality curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QualityPoint {
    /// The Q4 threshold.
    #[cfg_attr(feature = "openapi", schema(example = 7.0))]
    pub threshold: f64,
    /// The share (0..=1) of the labelled prompts it sends to Q4.
    #[cfg_attr(feature = "openapi", schema(example = 0.31))]
    pub q4_share: f64,
    /// The share of the weak-to-strong quality gap it recovers on them.
    #[cfg_attr(feature = "openapi", schema(example = 0.55))]
    pub gap_recovered: f64,
}

/// What routing at a threshold is expected to cost in answer quality,
/// measured on labelled prompts (Q4 as the strong model, Q2/Q3 as the weak).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExpectedQuality {
    /// The share of the weak-to-strong quality gap recovered at the
    /// threshold in use (0: as if all weak; 1: as if all strong).
    #[cfg_attr(feature = "openapi", schema(example = 0.8))]
    pub gap_recovered: f64,
    /// The share (0..=1) of the labelled prompts sent to Q4.
    #[cfg_attr(feature = "openapi", schema(example = 0.45))]
    pub q4_share: f64,
    /// Their mean quality when routed at the threshold.
    #[cfg_attr(feature = "openapi", schema(example = 0.76))]
    pub quality_at_threshold: f64,
    /// Mean quality of the weak model on them.
    #[cfg_attr(feature = "openapi", schema(example = 0.673))]
    pub weak: f64,
    /// Mean quality of the strong model on them.
    #[cfg_attr(feature = "openapi", schema(example = 0.796))]
    pub strong: f64,
    /// The labelled data it was measured on.
    pub source: QualitySource,
    /// The Q4 share and gap recovered at every threshold 0, 0.5, ... 15.
    #[serde(default)]
    pub curve: Vec<QualityPoint>,
}

impl ExpectedQuality {
    /// The curve's point nearest `threshold` (the panel's what-if marker).
    pub fn point_near(&self, threshold: f64) -> Option<QualityPoint> {
        self.curve.iter().copied().min_by(|a, b| {
            (a.threshold - threshold)
                .abs()
                .total_cmp(&(b.threshold - threshold).abs())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(rows: &[(f64, f64, f64)]) -> Vec<Scored> {
        rows.iter()
            .map(|&(score, weak, strong)| Scored {
                score,
                weak,
                strong,
            })
            .collect()
    }

    fn mixed() -> Vec<(f64, f64, f64)> {
        // weak 0.4, strong 0.7 over ten prompts.
        vec![
            (0.0, 1.0, 1.0),
            (0.0, 0.0, 1.0),
            (0.0, 1.0, 0.0),
            (0.0, 0.0, 0.0),
            (0.0, 0.0, 1.0),
            (0.0, 1.0, 1.0),
            (0.0, 0.0, 1.0),
            (0.0, 1.0, 1.0),
            (0.0, 0.0, 0.0),
            (0.0, 0.0, 1.0),
        ]
    }

    #[test]
    fn a_constant_scorer_is_exactly_random() {
        let c = QualityCurve::new(&scored(&mixed())).unwrap();
        assert!((c.apgr().unwrap() - 0.5).abs() < 1e-12);
        assert!((c.weak() - 0.4).abs() < 1e-12 && (c.strong() - 0.7).abs() < 1e-12);
        // Fractional routing: half the strong calls recover half the gap.
        assert!((c.cpt(0.5).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn an_oracle_is_above_one_and_its_reverse_below_zero() {
        let rows: Vec<_> = mixed().into_iter().map(|(_, w, s)| (s - w, w, s)).collect();
        let c = QualityCurve::new(&scored(&rows)).unwrap();
        assert!(c.apgr().unwrap() > 1.0, "{:?}", c.apgr());
        let rev: Vec<_> = rows.iter().map(|&(d, w, s)| (-d, w, s)).collect();
        assert!(QualityCurve::new(&scored(&rev)).unwrap().apgr().unwrap() < 0.0);
    }

    #[test]
    fn thresholds_route_whole_tie_blocks() {
        let rows = [
            (9.0, 0.0, 1.0),
            (5.0, 0.0, 1.0),
            (5.0, 1.0, 1.0),
            (1.0, 1.0, 0.0),
        ];
        let c = QualityCurve::new(&scored(&rows)).unwrap();
        assert_eq!(c.at_threshold(7.0), (0.25, 0.75));
        assert_eq!(c.at_threshold(5.0), (0.75, 1.0));
        assert_eq!(c.at_threshold(10.0), (0.0, 0.5));
        assert!((c.gap_recovered_at(7.0) - 1.0).abs() < 1e-12);
        assert_eq!(c.threshold_for(1.0, 15.0), 9.0);
        assert_eq!(c.threshold_for(0.0, 15.0), 15.0);
    }

    #[test]
    fn no_gap_has_no_apgr() {
        let rows = [(1.0, 1.0, 1.0), (2.0, 0.0, 0.0)];
        let c = QualityCurve::new(&scored(&rows)).unwrap();
        assert_eq!(c.apgr(), None);
        assert_eq!(c.apgr11(), None);
        assert_eq!(QualityCurve::new(&[]), None);
    }

    #[test]
    fn eleven_points_of_a_constant_scorer_are_random_too() {
        let c = QualityCurve::new(&scored(&mixed())).unwrap();
        // Every decile is the one score: all or nothing, the straight line.
        assert!((c.apgr11().unwrap() - 0.5).abs() < 1e-12);
    }
}
