//! Kill/teardown time: `DELETE /sandboxes/{id}` until 204, and until the
//! sandbox's processes, cgroups and directory are gone from the host.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::api::Api;
use crate::create::ms;
use crate::memory::{sandbox_cgroup_dirs, sandbox_pids};
use crate::report::Row;

const GONE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn rows(api: &Api, instance: &str, data_dir: &Path, n: usize) -> Vec<Row> {
    let mut delete_ms = Vec::new();
    let mut gone_ms = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    for _ in 0..n {
        match one(api, instance, data_dir).await {
            Ok((d, g)) => {
                delete_ms.push(ms(d));
                gone_ms.push(ms(g));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        return vec![
            Row::error("kill: DELETE → 204", &e),
            Row::error("kill: DELETE → resources gone", &e),
        ];
    }
    let row =
        |what: &str, samples: &[f64], note: &str| Row::millis(what, samples).note(note).judged();
    vec![
        row("kill: DELETE → 204", &delete_ms, ""),
        row(
            "kill: DELETE → resources gone",
            &gone_ms,
            "until the sandbox's processes, cgroups and data directory are gone from the host",
        ),
    ]
}

async fn one(api: &Api, instance: &str, data_dir: &Path) -> Result<(Duration, Duration)> {
    let (created, _) = api.create().await?;
    let id = created.id;
    let cgroups = sandbox_cgroup_dirs(instance, &id);
    let pids = sandbox_pids(instance, &id);
    let dir = data_dir.join("sandboxes").join(&id);
    if cgroups.is_empty() || pids.is_empty() {
        api.kill(&id).await.ok();
        bail!("sandbox {id} has no cgroup with processes under sandbar-{instance}: cannot watch its teardown");
    }
    let start = Instant::now();
    let deleted = api.kill(&id).await?;
    loop {
        let left = cgroups.iter().any(|d| d.exists())
            || pids
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
            || dir.exists();
        if !left {
            return Ok((deleted, start.elapsed()));
        }
        if start.elapsed() > GONE_TIMEOUT {
            bail!("sandbox {id}: resources still present {GONE_TIMEOUT:?} after DELETE");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}
