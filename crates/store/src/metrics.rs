//! Metrics over time: samples of each running sandbox (CPU, memory, disk),
//! and what a team's sandbox records say about its concurrency.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{from_millis, millis, query_err, Store, StoreError};

/// One sample of one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub sandbox_id: String,
    pub team_id: String,
    pub at: DateTime<Utc>,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// A sandbox's life as the team metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifespan {
    pub started_at: DateTime<Utc>,
    /// `None` while it lives.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Most samples one range query returns (a day of 5 s samples is 17,280).
pub const MAX_SAMPLES: i64 = 20_000;

const COLUMNS: &str = "sandbox_id, team_id, ts, cpu_count, cpu_used_pct, mem_used, mem_total, mem_cache, disk_used, disk_total";

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn row_to_sample(row: &sqlx::any::AnyRow) -> Result<MetricSample, StoreError> {
    let int = |c: &str| -> Result<i64, StoreError> {
        row.try_get(c)
            .map_err(query_err("decoding a metric sample"))
    };
    let uint = |c: &str| -> Result<u64, StoreError> { Ok(u64::try_from(int(c)?).unwrap_or(0)) };
    Ok(MetricSample {
        sandbox_id: row
            .try_get("sandbox_id")
            .map_err(query_err("decoding a metric sample"))?,
        team_id: row
            .try_get("team_id")
            .map_err(query_err("decoding a metric sample"))?,
        at: from_millis("metric ts", int("ts")?)?,
        cpu_count: u32::try_from(int("cpu_count")?).unwrap_or(0),
        cpu_used_pct: row
            .try_get("cpu_used_pct")
            .map_err(query_err("decoding a metric sample"))?,
        mem_used: uint("mem_used")?,
        mem_total: uint("mem_total")?,
        mem_cache: uint("mem_cache")?,
        disk_used: uint("disk_used")?,
        disk_total: uint("disk_total")?,
    })
}

impl Store {
    /// Stores samples, all in one transaction (one commit per sampling
    /// round, whatever the number of sandboxes). A sample already stored
    /// for the same sandbox and millisecond is kept.
    pub async fn put_metrics(&self, samples: &[MetricSample]) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a metrics transaction"))?;
        let sql = format!(
            "INSERT INTO sandbox_metrics ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (sandbox_id, ts) DO NOTHING"
        );
        for s in samples {
            sqlx::query(&sql)
                .bind(&s.sandbox_id)
                .bind(&s.team_id)
                .bind(millis(s.at))
                .bind(i64::from(s.cpu_count))
                .bind(s.cpu_used_pct)
                .bind(clamp(s.mem_used))
                .bind(clamp(s.mem_total))
                .bind(clamp(s.mem_cache))
                .bind(clamp(s.disk_used))
                .bind(clamp(s.disk_total))
                .execute(&mut *tx)
                .await
                .map_err(query_err("storing a metric sample"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("committing metric samples"))
    }

    /// A sandbox's samples with `from <= at <= to`, oldest first, at most
    /// [`MAX_SAMPLES`] (the latest ones when there are more).
    pub async fn metrics(
        &self,
        sandbox_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MetricSample>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sandbox_metrics WHERE sandbox_id = $1 AND ts >= $2 AND ts <= $3 \
             ORDER BY ts DESC LIMIT $4"
        ))
        .bind(sandbox_id)
        .bind(millis(from))
        .bind(millis(to))
        .bind(MAX_SAMPLES)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading metric samples"))?;
        let mut out = rows
            .iter()
            .map(row_to_sample)
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Removes samples taken before `before`; how many went.
    pub async fn prune_metrics(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sandbox_metrics WHERE ts < $1")
            .bind(millis(before))
            .execute(&self.pool)
            .await
            .map_err(query_err("pruning metric samples"))?;
        Ok(done.rows_affected())
    }

    /// The lives of a team's sandboxes that overlap `[from, to]`.
    pub async fn team_lifespans(
        &self,
        team_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Lifespan>, StoreError> {
        let rows = sqlx::query(
            "SELECT started_at, ended_at FROM sandboxes WHERE team_id = $1 AND started_at <= $2 \
             AND (ended_at IS NULL OR ended_at >= $3)",
        )
        .bind(team_id)
        .bind(millis(to))
        .bind(millis(from))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a team's sandbox lifespans"))?;
        rows.iter()
            .map(|r| {
                let started: i64 = r
                    .try_get("started_at")
                    .map_err(query_err("decoding a lifespan"))?;
                let ended: Option<i64> = r
                    .try_get("ended_at")
                    .map_err(query_err("decoding a lifespan"))?;
                Ok(Lifespan {
                    started_at: from_millis("sandbox started_at", started)?,
                    ended_at: ended
                        .map(|e| from_millis("sandbox ended_at", e))
                        .transpose()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, at_ms: i64, cpu: f64) -> MetricSample {
        MetricSample {
            sandbox_id: id.into(),
            team_id: "t1".into(),
            at: DateTime::from_timestamp_millis(at_ms).unwrap(),
            cpu_count: 2,
            cpu_used_pct: cpu,
            mem_used: 10 << 20,
            mem_total: 512 << 20,
            mem_cache: 1 << 20,
            disk_used: 3 << 20,
            disk_total: 1 << 30,
        }
    }

    #[tokio::test]
    async fn samples_are_stored_ranged_and_pruned() {
        for t in crate::testing::stores().await {
            let s = &t.store;
            let batch: Vec<_> = (0..5)
                .map(|i| sample("a", 1_000_000 + i * 5000, i as f64 * 10.5))
                .chain([sample("b", 1_000_000, 99.0)])
                .collect();
            s.put_metrics(&batch).await.unwrap();
            // The same instant again is kept once.
            s.put_metrics(&batch[..1]).await.unwrap();
            let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
            let all = s.metrics("a", at(0), at(4_000_000_000_000)).await.unwrap();
            assert_eq!(all, batch[..5].to_vec(), "oldest first, exact values");
            let mid = s.metrics("a", at(1_005_000), at(1_015_000)).await.unwrap();
            assert_eq!(mid.len(), 3);
            assert!(s.metrics("a", at(0), at(999_999)).await.unwrap().is_empty());
            assert_eq!(s.prune_metrics(at(1_010_000)).await.unwrap(), 3);
            assert_eq!(
                s.metrics("a", at(0), at(4_000_000_000_000))
                    .await
                    .unwrap()
                    .len(),
                3
            );
            t.finish().await;
        }
    }
}
