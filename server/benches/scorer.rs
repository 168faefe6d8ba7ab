//! Decision time of the scorers, per query, on one core: every prompt of
//! the shipped labelled data scored 21 times, the median of its 21 times
//! kept, and the percentiles taken over the prompts. Run by
//! `scripts/bench.sh scorer` (pinned to one core with taskset).

use server::eval::embedded;
use server::routing::Scorer;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let data = embedded();
    let mut rows = Vec::new();
    for scorer in [Scorer::Heuristic, Scorer::Learned] {
        // Warm up: the embedded model is parsed once, on first use.
        black_box(scorer.assess("warm up"));
        let mut per_prompt: Vec<f64> = data
            .iter()
            .map(|l| {
                let mut runs: Vec<f64> = (0..21)
                    .map(|_| {
                        let t = Instant::now();
                        black_box(scorer.assess(black_box(&l.prompt)));
                        t.elapsed().as_secs_f64() * 1e6
                    })
                    .collect();
                runs.sort_by(f64::total_cmp);
                runs[10]
            })
            .collect();
        per_prompt.sort_by(f64::total_cmp);
        let at = |q: f64| per_prompt[((per_prompt.len() - 1) as f64 * q).round() as usize];
        rows.push((scorer.name(), at(0.5), at(0.99), at(1.0)));
    }
    println!("decision time per query, µs, over {} prompts:", data.len());
    for (name, p50, p99, max) in &rows {
        println!("{name:>9}: p50 {p50:.1}  p99 {p99:.1}  max {max:.1}");
    }
    let (_, _, learned_p99, _) = rows[1];
    println!(
        "learned p99 = {:.3} of the 1 ms bound; learned/heuristic p50 = {:.2}",
        learned_p99 / 1000.0,
        rows[1].1 / rows[0].1
    );
}
