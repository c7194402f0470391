//! Create-to-ready through the REST API: `POST /v2/sandboxes` until 201,
//! which sandbar sends only once envd inside answers.

use std::time::Duration;

use crate::api::Api;
use crate::report::{Measure, Row, Target, Unit};
use crate::stats::Summary;

pub struct Batch {
    pub samples_ms: Vec<f64>,
    pub failures: usize,
    pub first_error: Option<String>,
    /// Failures that were not the overload answer (429 or 503).
    pub unclear: usize,
}

/// `rounds` rounds of `concurrency` creates at once; every sandbox is killed
/// after its round (not timed here). Before each round, the server's warm
/// pool for the template may refill (up to [`POOL_SETTLE`]): a burst meets
/// the pool the last one sized, as one that came a little later would.
pub async fn run(api: &Api, concurrency: usize, rounds: usize) -> Batch {
    let mut batch = Batch {
        samples_ms: Vec::new(),
        failures: 0,
        first_error: None,
        unclear: 0,
    };
    for _ in 0..rounds {
        settle(api, concurrency).await;
        let results = futures::future::join_all((0..concurrency).map(|_| api.create())).await;
        let mut ids = Vec::new();
        for r in results {
            match r {
                Ok((created, took)) => {
                    batch.samples_ms.push(ms(took));
                    ids.push(created.id);
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    batch.failures += 1;
                    if !(text.contains(" answered 429") || text.contains(" answered 503")) {
                        batch.unclear += 1;
                    }
                    batch.first_error.get_or_insert(text);
                }
            }
        }
        if let Err(e) = api.kill_all(&ids).await {
            batch
                .first_error
                .get_or_insert_with(|| format!("killing after the round: {e:#}"));
            batch.failures += 1;
        }
    }
    batch
}

/// `n` creates at once, beyond what the node starts at a time: every one is
/// made, or refused with the overload answer (429 or 503 and a message);
/// the latency of those made is reported.
pub async fn burst_row(api: &Api, n: usize) -> Row {
    let what = format!("create → ready, {n} concurrent (pool warm, REST)");
    let batch = run(api, n, 1).await;
    if batch.unclear > 0 {
        let err = anyhow::anyhow!(
            "{} of {n} failed without the overload answer; first: {}",
            batch.unclear,
            batch.first_error.unwrap_or_default()
        );
        return Row::error(what, &err);
    }
    let Some(summary) = Summary::of(&batch.samples_ms) else {
        let err = anyhow::anyhow!("none was made: {}", batch.first_error.unwrap_or_default());
        return Row::error(what, &err);
    };
    Row::new(
        what,
        Measure::Distribution {
            unit: Unit::Ms,
            summary,
        },
    )
    .failures(batch.failures, false)
    .note(format!(
        "{} made, {} refused with 429/503 (the target: all made or a clear refusal; p99 reported)",
        batch.samples_ms.len(),
        batch.failures
    ))
    .judged()
}

/// How long a round waits for the warm pool to refill.
const POOL_SETTLE: Duration = Duration::from_secs(15);

/// Waits until the pool holds what it aims at (or `concurrency`), or for
/// [`POOL_SETTLE`]; at once where the server keeps no pool.
async fn settle(api: &Api, concurrency: usize) {
    let deadline = tokio::time::Instant::now() + POOL_SETTLE;
    while let Ok(Some((ready, target))) = api.warm_pool().await {
        if ready >= target.min(concurrency) || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The create rows: the first concurrency is held to the one-at-a-time
/// target, the last to the 50-concurrent one. `pool`: whether the server
/// keeps warm pools (the targets differ) and the rows say which.
pub async fn rows(api: &Api, plan: &[(usize, usize)], pool: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let (one_at_a_time, burst_p99, shown) = if pool {
        (3.0, 100.0, "pool warm")
    } else {
        (8.0, 150.0, "pool empty: --warm-budget-mb 0")
    };
    for (i, &(concurrency, rounds)) in plan.iter().enumerate() {
        let what = format!("create → ready, {concurrency} concurrent ({shown}, REST)");
        let batch = run(api, concurrency, rounds).await;
        let Some(summary) = Summary::of(&batch.samples_ms) else {
            let err = anyhow::anyhow!(
                "every create failed: {}",
                batch.first_error.unwrap_or_default()
            );
            rows.push(Row::error(what, &err));
            continue;
        };
        let mut row = Row::new(
            what,
            Measure::Distribution {
                unit: Unit::Ms,
                summary,
            },
        )
        .failures(batch.failures, i > 0);
        if i == 0 && concurrency == 1 {
            row = row.target(Target::MedianAtMost(one_at_a_time));
        } else if i + 1 == plan.len() && i > 0 {
            row = row.target(Target::P99AtMost(burst_p99));
            if concurrency != 50 {
                row = row.note(format!(
                    "the design target is for 50 concurrent; this run used {concurrency}"
                ));
            }
        }
        if let Some(e) = batch.first_error {
            row = row.note(format!("first failure: {e}"));
        }
        rows.push(row.judged());
    }
    rows
}
