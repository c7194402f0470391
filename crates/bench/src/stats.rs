//! Order statistics over samples. Percentiles use the nearest-rank method, so
//! every reported figure is a value that was actually observed.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there are no samples: an empty row must not print zeros.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            n: sorted.len(),
            median: rank(&sorted, 50.0),
            p95: rank(&sorted, 95.0),
            p99: rank(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

fn rank(sorted: &[f64], pct: f64) -> f64 {
    let idx = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let s: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let sum = Summary::of(&s).unwrap();
        assert_eq!(
            (sum.n, sum.median, sum.p95, sum.p99, sum.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
    }

    #[test]
    fn small_sets_report_observed_values() {
        let sum = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (sum.median, sum.p95, sum.p99, sum.max),
            (2.0, 3.0, 3.0, 3.0)
        );
        assert_eq!(Summary::of(&[7.5]).unwrap().p99, 7.5);
        assert!(Summary::of(&[]).is_none());
    }
}
