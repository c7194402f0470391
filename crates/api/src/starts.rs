//! Admission to the node under overload: at most `max_starting` sandboxes
//! start at once; more creates wait their turn in arrival order (a fair
//! FIFO queue) for at most `start_queue_wait`, then get a 503 with
//! `Retry-After` and a message saying how busy the node is, never a
//! request that hangs until the client gives up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::ApiError;

pub(crate) struct Starts {
    slots: Semaphore,
    max: usize,
    wait: Duration,
    waiting: AtomicUsize,
}

/// A place among the starting sandboxes, given back on drop.
pub(crate) struct Starting<'a> {
    _permit: SemaphorePermit<'a>,
}

impl Starts {
    pub(crate) fn new(max: usize, wait: Duration) -> Self {
        let max = max.max(1);
        Self {
            slots: Semaphore::new(max),
            max,
            wait,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a place (FIFO, at most the configured wait).
    pub(crate) async fn enter(&self) -> Result<Starting<'_>, ApiError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(Starting { _permit: permit });
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout(self.wait, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(permit)) => Ok(Starting { _permit: permit }),
            Ok(Err(_closed)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is shutting down",
            )),
            Err(_elapsed) => {
                crate::telemetry::start_refused();
                tracing::warn!(
                    starting = self.max,
                    waiting = ahead,
                    wait_ms = self.wait.as_millis() as u64,
                    "a create waited too long for a place to start"
                );
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the node is busy: {} sandboxes are starting and {ahead} more were waiting; \
                         this create waited {} ms without a place, try again",
                        self.max,
                        self.wait.as_millis()
                    ),
                )
                .with_header("retry-after", HeaderValue::from_static("1")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_create_past_the_wait_is_a_503_with_retry_after_and_the_queue_is_fifo() {
        let starts = Starts::new(1, Duration::from_millis(100));
        let first = starts.enter().await.expect("a free place");
        let refused = match starts.enter().await {
            Err(e) => e,
            Ok(_) => panic!("a second start got in while the first ran"),
        };
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            refused
                .message
                .contains("the node is busy: 1 sandboxes are starting"),
            "{}",
            refused.message
        );
        assert!(refused
            .headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "1"));
        // Waiting ones get in in their order once places free up.
        let starts = std::sync::Arc::new(Starts::new(1, Duration::from_secs(5)));
        let held = starts.enter().await.unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (s, o) = (starts.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _p = s.enter().await.unwrap();
                o.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Queued in this order.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        drop(first);
    }
}
