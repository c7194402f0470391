//! The result table: rows with their figures, the design target each one is
//! held to, and the verdict; rendered as markdown or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Ms,
    MiB,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::MiB => "MiB",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measure {
    Distribution {
        unit: Unit,
        #[serde(flatten)]
        summary: Summary,
    },
    Throughput {
        requests_per_s: f64,
        p99_ms: f64,
        vs_nginx: Option<f64>,
        vs_direct: Option<f64>,
    },
    Value {
        unit: String,
        value: f64,
    },
    /// The row could not be measured at all.
    Error {
        error: String,
    },
}

/// A target from the design's performance table, in the row's own unit.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "rule", content = "bound", rename_all = "snake_case")]
pub enum Target {
    MedianAtMost(f64),
    P99AtMost(f64),
    RatioToNginxAtLeast(f64),
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::MedianAtMost(v) => format!("p50 ≤ {} {unit}", num(v)),
            Target::P99AtMost(v) => format!("p99 ≤ {} {unit}", num(v)),
            Target::RatioToNginxAtLeast(v) => format!("≥ {:.0}% of nginx", v * 100.0),
            Target::AtMost(v) => format!("≤ {} {unit}", num(v)),
            Target::AtLeast(v) => format!("≥ {} {unit}", num(v)),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Met,
    Missed,
    None,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub what: String,
    #[serde(flatten)]
    pub measure: Measure,
    /// Attempts that failed among those the row is made of.
    pub failures: usize,
    pub target: Option<Target>,
    /// The target also demands that no attempt failed.
    #[serde(skip)]
    pub all_must_succeed: bool,
    pub verdict: Verdict,
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, measure: Measure) -> Self {
        Self {
            what: what.into(),
            measure,
            failures: 0,
            target: None,
            all_must_succeed: false,
            verdict: Verdict::None,
            note: String::new(),
        }
    }

    /// A distribution of `samples` in milliseconds, or an error row when
    /// there are none.
    pub fn millis(what: impl Into<String>, samples: &[f64]) -> Self {
        let what = what.into();
        match Summary::of(samples) {
            Some(summary) => Self::new(
                what,
                Measure::Distribution {
                    unit: Unit::Ms,
                    summary,
                },
            ),
            None => Self::error(what, &anyhow::anyhow!("no samples")),
        }
    }

    pub fn error(what: impl Into<String>, err: &anyhow::Error) -> Self {
        Self::new(
            what,
            Measure::Error {
                error: format!("{err:#}"),
            },
        )
        .judged()
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    pub fn failures(mut self, n: usize, all_must_succeed: bool) -> Self {
        self.failures = n;
        self.all_must_succeed = all_must_succeed;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        if !self.note.is_empty() && !note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(&note);
        self
    }

    /// Sets the verdict from the figures and the target.
    pub fn judged(mut self) -> Self {
        self.verdict = match (&self.measure, self.target) {
            (Measure::Error { .. }, _) => Verdict::Error,
            (_, None) => Verdict::None,
            (m, Some(t)) => {
                let ok = match (m, t) {
                    (Measure::Distribution { summary, .. }, Target::MedianAtMost(b)) => {
                        summary.median <= b
                    }
                    (Measure::Distribution { summary, .. }, Target::P99AtMost(b)) => {
                        summary.p99 <= b
                    }
                    (Measure::Distribution { summary, .. }, Target::AtMost(b)) => {
                        summary.median <= b
                    }
                    (
                        Measure::Throughput {
                            vs_nginx: Some(r), ..
                        },
                        Target::RatioToNginxAtLeast(b),
                    ) => *r >= b,
                    (Measure::Value { value, .. }, Target::AtMost(b)) => *value <= b,
                    (Measure::Value { value, .. }, Target::AtLeast(b)) => *value >= b,
                    _ => false,
                };
                if ok && !(self.all_must_succeed && self.failures > 0) {
                    Verdict::Met
                } else {
                    Verdict::Missed
                }
            }
        };
        self
    }

    fn unit_label(&self) -> String {
        match &self.measure {
            Measure::Distribution { unit, .. } => unit.suffix().to_string(),
            Measure::Value { unit, .. } => unit.clone(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub mode: String,
    pub started_at: String,
    pub sandbar_version: String,
    pub load_at_end: f64,
    pub rows: Vec<Row>,
    /// What the bench found left on the host after it stopped sandbar.
    pub leftovers: Vec<String>,
}

impl Report {
    pub fn failed(&self, strict: bool) -> bool {
        !self.leftovers.is_empty()
            || self
                .rows
                .iter()
                .any(|r| r.verdict == Verdict::Error || (strict && r.failures > 0))
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## sandbar benchmark ({} run, {})\n",
            self.mode, self.started_at
        );
        let _ = writeln!(
            out,
            "Machine: {} ({} cores), {:.1} GiB memory, Linux {}, {}; load average {:.2} at start, {:.2} at end; {}.\n",
            m.cpu_model, m.cores, m.memory_gib, m.kernel, m.os, m.load_at_start, self.load_at_end, self.sandbar_version
        );
        out.push_str("| what | n | median | p95 | p99 | max | req/s | vs nginx | vs direct | target | result |\n");
        out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n");
        for r in &self.rows {
            let unit = r.unit_label();
            let cells: [String; 8] = match &r.measure {
                Measure::Distribution {
                    unit: u,
                    summary: s,
                } => [
                    s.n.to_string(),
                    fmt(s.median, *u),
                    fmt(s.p95, *u),
                    fmt(s.p99, *u),
                    fmt(s.max, *u),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Measure::Throughput {
                    requests_per_s,
                    p99_ms,
                    vs_nginx,
                    vs_direct,
                } => [
                    String::new(),
                    String::new(),
                    String::new(),
                    fmt(*p99_ms, Unit::Ms),
                    String::new(),
                    format!("{requests_per_s:.0}"),
                    ratio(*vs_nginx),
                    ratio(*vs_direct),
                ],
                Measure::Value { value, unit } => [
                    String::new(),
                    format!("{} {unit}", num(*value)),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Measure::Error { .. } => Default::default(),
            };
            let target = r
                .target
                .map(|t| t.describe(&unit))
                .unwrap_or_else(|| "—".into());
            let result = match r.verdict {
                Verdict::Met => "met".to_string(),
                Verdict::Missed => "**missed**".to_string(),
                Verdict::None => "—".to_string(),
                Verdict::Error => "**error**".to_string(),
            };
            let mut what = r.what.clone();
            if r.failures > 0 {
                let _ = write!(what, " ({} failed)", r.failures);
            }
            let _ = writeln!(
                out,
                "| {what} | {} | {target} | {result} |",
                cells.join(" | ")
            );
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| match &r.measure {
                Measure::Error { error } => Some(format!("- {}: error: {error}", r.what)),
                _ if !r.note.is_empty() => Some(format!("- {}: {}", r.what, r.note)),
                _ => None,
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        if !self.leftovers.is_empty() {
            out.push_str("\nLEFT ON THE HOST after sandbar stopped:\n\n");
            for l in &self.leftovers {
                let _ = writeln!(out, "- {l}");
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt(v: f64, unit: Unit) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {}", unit.suffix())
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(median: f64, p99: f64) -> Measure {
        Measure::Distribution {
            unit: Unit::Ms,
            summary: Summary {
                n: 10,
                median,
                p95: p99,
                p99,
                max: p99,
            },
        }
    }

    #[test]
    fn verdicts_follow_targets() {
        assert_eq!(
            Row::new("a", dist(10.0, 20.0))
                .target(Target::MedianAtMost(15.0))
                .judged()
                .verdict,
            Verdict::Met
        );
        assert_eq!(
            Row::new("a", dist(16.0, 20.0))
                .target(Target::MedianAtMost(15.0))
                .judged()
                .verdict,
            Verdict::Missed
        );
        assert_eq!(
            Row::new("a", dist(1.0, 151.0))
                .target(Target::P99AtMost(150.0))
                .judged()
                .verdict,
            Verdict::Missed
        );
        let failed = Row::new("a", dist(1.0, 2.0))
            .target(Target::P99AtMost(150.0))
            .failures(1, true)
            .judged();
        assert_eq!(failed.verdict, Verdict::Missed);
        assert_eq!(
            Row::new("a", dist(1.0, 2.0)).judged().verdict,
            Verdict::None
        );
        let tp = |r| Measure::Throughput {
            requests_per_s: 1.0,
            p99_ms: 1.0,
            vs_nginx: r,
            vs_direct: None,
        };
        assert_eq!(
            Row::new("p", tp(Some(0.95)))
                .target(Target::RatioToNginxAtLeast(0.9))
                .judged()
                .verdict,
            Verdict::Met
        );
        assert_eq!(
            Row::new("p", tp(Some(0.5)))
                .target(Target::RatioToNginxAtLeast(0.9))
                .judged()
                .verdict,
            Verdict::Missed
        );
        assert_eq!(
            Row::new("p", tp(None))
                .target(Target::RatioToNginxAtLeast(0.9))
                .judged()
                .verdict,
            Verdict::Missed
        );
        let count = Measure::Value {
            unit: "sandboxes".into(),
            value: 999.0,
        };
        assert_eq!(
            Row::new("c", count)
                .target(Target::AtLeast(1000.0))
                .judged()
                .verdict,
            Verdict::Missed
        );
        let err = Row::error("e", &anyhow::anyhow!("boom"));
        assert_eq!(err.verdict, Verdict::Error);
    }

    #[test]
    fn markdown_names_errors_and_targets() {
        let report = Report {
            machine: Machine::default(),
            mode: "smoke".into(),
            started_at: "now".into(),
            sandbar_version: "sandbar 0".into(),
            load_at_end: 0.0,
            rows: vec![
                Row::new("create", dist(10.0, 20.0))
                    .target(Target::MedianAtMost(15.0))
                    .judged(),
                Row::error("ws", &anyhow::anyhow!("no upgrade")),
            ],
            leftovers: vec![],
        };
        let md = report.markdown();
        assert!(
            md.contains("| create | 10 | 10.0 ms | 20.0 ms | 20.0 ms | 20.0 ms |"),
            "{md}"
        );
        assert!(md.contains("p50 ≤ 15 ms | met |"), "{md}");
        assert!(md.contains("- ws: error: no upgrade"), "{md}");
        assert!(report.failed(false));

        let json = serde_json::to_value(&report).unwrap();
        let row = &json["rows"][0];
        assert_eq!(
            (
                row["kind"].as_str(),
                row["median"].as_f64(),
                row["unit"].as_str()
            ),
            (Some("distribution"), Some(10.0), Some("ms"))
        );
        assert_eq!(
            (row["verdict"].as_str(), row["target"]["rule"].as_str()),
            (Some("met"), Some("median_at_most"))
        );
        assert_eq!(json["rows"][1]["error"].as_str(), Some("no upgrade"));
    }
}
