//! Memory per idle sandbox and how many idle sandboxes fit: create up to N,
//! stopping at the first failure or when the host's available memory falls
//! under a fifth of the total; then read each sandbox's cgroup and the
//! host's used memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;

use crate::api::Api;
use crate::memory::{meminfo, sandbox_memory};
use crate::report::{Measure, Row, Target, Unit};
use crate::stats::Summary;

const MIB: f64 = (1u64 << 20) as f64;
const MIN_AVAILABLE_FRACTION: f64 = 0.20;
/// Creates in flight: enough to fill the host quickly, few enough not to
/// measure the create path under overload.
const PARALLEL: usize = 4;
/// Lets the sandboxes' start-up (page faults, envd's first allocations) settle.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn rows(api: &Api, instance: &str, target_count: usize) -> Vec<Row> {
    let before = match meminfo() {
        Ok(m) => m,
        Err(e) => return vec![Row::error("idle sandboxes held", &e)],
    };
    let stop = AtomicBool::new(false);
    let stop_reason: Mutex<Option<String>> = Mutex::new(None);
    let ids: Mutex<Vec<String>> = Mutex::new(Vec::new());

    futures::stream::iter(0..target_count)
        .for_each_concurrent(PARALLEL, |_| async {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match meminfo() {
                Ok(m) if (m.available as f64) < m.total as f64 * MIN_AVAILABLE_FRACTION => {
                    stop.store(true, Ordering::Relaxed);
                    stop_reason
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| "available memory fell under 20%".into());
                    return;
                }
                _ => {}
            }
            match api.create().await {
                Ok((c, _)) => ids.lock().unwrap().push(c.id),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    stop_reason
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("create failed: {e:#}"));
                }
            }
        })
        .await;
    let ids = ids.into_inner().unwrap();
    let stop_reason = stop_reason.into_inner().unwrap();
    tracing::info!(count = ids.len(), "density: sandboxes up; settling");
    tokio::time::sleep(SETTLE).await;

    let after = meminfo();
    let per_sandbox: Vec<f64> = ids
        .iter()
        .filter_map(|id| sandbox_memory(instance, id).ok())
        .map(|b| b as f64 / MIB)
        .collect();
    let unreadable = ids.len() - per_sandbox.len();
    let count = ids.len();
    let sampling = sampling_row(api, count).await;

    let kill = api.kill_all(&ids).await;

    let mut rows = vec![sampling];
    let cgroup_what = "idle sandbox memory, its cgroup";
    match Summary::of(&per_sandbox) {
        Some(summary) => {
            let mut row = Row::new(cgroup_what, Measure::Distribution { unit: Unit::MiB, summary })
                .target(Target::AtMost(5.0))
                .note("memory.usage_in_bytes (v1) / memory.current (v2) of each idle sandbox, page cache included");
            if unreadable > 0 {
                row = row.note(format!(
                    "{unreadable} sandboxes had no readable memory cgroup"
                ));
            }
            rows.push(row.judged());
        }
        None => rows.push(Row::error(
            cgroup_what,
            &anyhow::anyhow!("no sandbox's memory cgroup could be read"),
        )),
    }
    let host_what = "idle sandbox memory, host used ÷ count";
    match after {
        Ok(after) if count > 0 => {
            let per = (after.used() as f64 - before.used() as f64) / count as f64 / MIB;
            let mut row = Row::new(
                host_what,
                Measure::Value {
                    unit: "MiB".into(),
                    value: per,
                },
            );
            // Other processes on the host move this figure too; a negative
            // one says only that they freed more than the sandboxes took.
            row = if per > 0.0 {
                row.target(Target::AtMost(5.0))
            } else {
                row.note(
                    "not meaningful: other processes freed memory meanwhile (run on a quiet host)",
                )
            };
            rows.push(
                row
                    .note(format!(
                        "(MemTotal − MemAvailable) after {count} idle sandboxes minus before, ÷ {count}: kernel objects \
                         (namespaces, veths, mounts) and sandbar's own bookkeeping included"
                    ))
                    .judged(),
            );
        }
        Ok(_) => rows.push(Row::error(
            host_what,
            &anyhow::anyhow!("no sandbox was created"),
        )),
        Err(e) => rows.push(Row::error(host_what, &e)),
    }
    let mut held = Row::new(
        "idle sandboxes held",
        Measure::Value {
            unit: "sandboxes".into(),
            value: count as f64,
        },
    )
    .target(Target::AtLeast(1000.0));
    held = match &stop_reason {
        Some(r) => held.note(format!("stopped early: {r}")),
        None => held.note(format!(
            "stopped at the requested {target_count}; the host held all of them"
        )),
    };
    if let Err(e) = kill {
        held = held
            .note(format!("killing them afterwards failed: {e:#}"))
            .failures(1, false);
    }
    rows.push(held.judged());
    rows
}

/// What sampling every running sandbox's metrics (CPU, memory, disk; one
/// store write a round) costs the server, scaled to 1,000 sandboxes: the
/// server's own figures for its last round (`GET /metrics`), read once a
/// round has seen all `count` sandboxes held here.
async fn sampling_row(api: &Api, count: usize) -> Row {
    const WHAT: &str = "metrics sampling round, per 1,000 running sandboxes";
    if count == 0 {
        return Row::error(WHAT, &anyhow::anyhow!("no sandbox was created"));
    }
    // Rounds come every 5 s; two of them are enough to see every sandbox.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut last = None;
    loop {
        match api
            .call(http::Method::GET, "/metrics", None, http::StatusCode::OK)
            .await
        {
            Ok((body, _)) => {
                let text = String::from_utf8_lossy(&body);
                let value = |name: &str| {
                    text.lines()
                        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                        .find_map(|v| v.trim().parse::<f64>().ok())
                };
                if let (Some(n), Some(secs)) = (
                    value("sandbar_metrics_sampled_sandboxes"),
                    value("sandbar_metrics_sampling_seconds"),
                ) {
                    last = Some((n, secs));
                    if n >= count as f64 {
                        break;
                    }
                }
            }
            Err(e) => return Row::error(WHAT, &e),
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match last {
        Some((n, secs)) if n > 0.0 => Row::new(
            WHAT,
            Measure::Value {
                unit: "ms".into(),
                value: secs * 1000.0 * 1000.0 / n,
            },
        )
        // A fifth of the 5 s between rounds, on one core.
        .target(Target::AtMost(1000.0))
        .note(format!(
            "the server's last round took {:.1} ms for {n} sandboxes (cgroup reads, disk usage, one store transaction), scaled to 1,000",
            secs * 1000.0
        ))
        .judged(),
        _ => Row::error(
            WHAT,
            &anyhow::anyhow!("GET /metrics showed no sampling round with sandboxes in it"),
        ),
    }
}
