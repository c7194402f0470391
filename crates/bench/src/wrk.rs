//! Runs `wrk` (Debian's) and reads its summary: requests per second, the
//! 99th percentile latency, and any failed requests.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

pub struct Load<'a> {
    pub url: &'a str,
    pub host: Option<&'a str>,
    /// Run wrk inside this network namespace (`nsenter --net`).
    pub netns: Option<&'a Path>,
    pub seconds: u64,
    pub connections: u32,
    pub threads: u32,
}

pub async fn run(load: &Load<'_>) -> Result<WrkResult> {
    let mut cmd = match load.netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("wrk");
            c
        }
        None => Command::new("wrk"),
    };
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--latency")
        .kill_on_drop(true);
    if let Some(host) = load.host {
        cmd.arg("-H").arg(format!("Host: {host}"));
    }
    cmd.arg(load.url);
    let limit = Duration::from_secs(load.seconds + 30);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("wrk against {} ran over {limit:?}", load.url))?
        .context("running wrk (Debian package `wrk`)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk against {} failed ({}): {}{}",
            load.url,
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result = parse(&text).with_context(|| format!("reading wrk's output:\n{text}"))?;
    if result.requests == 0 {
        bail!("wrk completed no request against {}:\n{text}", load.url);
    }
    Ok(result)
}

fn parse(text: &str) -> Result<WrkResult> {
    let mut requests = None;
    let mut rps = None;
    let mut p99 = None;
    let mut errors = 0u64;
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && line.starts_with("99%") {
            p99 = Some(duration_ms(
                line.split_whitespace().nth(1).context("99% line")?,
            )?);
            in_distribution = false;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if line.contains(" requests in ") {
            requests = Some(
                line.split_whitespace()
                    .next()
                    .context("requests line")?
                    .parse::<u64>()?,
            );
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().context("Non-2xx count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    errors += n.parse::<u64>().context("socket error count")?;
                }
            }
        }
    }
    Ok(WrkResult {
        requests: requests.context("no 'requests in' line")?,
        requests_per_s: rps.context("no Requests/sec line")?,
        p99_ms: p99.context("no 99% latency line (was --latency given?)")?,
        errors,
    })
}

/// wrk prints durations like `812.00us`, `2.51ms`, `1.02s`, `1.50m`.
fn duration_ms(s: &str) -> Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("number in {s:?}"))?;
    Ok(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => bail!("unknown unit in {s:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ http://127.0.0.1:8080/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  12.00ms   90.00%
    Req/Sec    12.00k     1.00k   14.00k    70.00%
  Latency Distribution
     50%    2.00ms
     75%    2.20ms
     90%    2.50ms
     99%  850.00us
  47762 requests in 2.00s, 6.83MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  23881.00
Transfer/sec:      3.41MB
";

    #[test]
    fn parses_the_summary() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(
            r,
            WrkResult {
                requests: 47762,
                requests_per_s: 23881.0,
                p99_ms: 0.85,
                errors: 7
            }
        );
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("1.5s").unwrap(), 1500.0);
        assert_eq!(duration_ms("2.00ms").unwrap(), 2.0);
        assert!(duration_ms("3").is_err());
        assert!(parse("nothing").is_err());
    }
}
