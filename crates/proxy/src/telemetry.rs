//! What the proxy tells Prometheus, through the `metrics` facade (the
//! binary installs the exporter): requests by status and their latency to
//! the response head, and the bytes that crossed it each way.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

/// A request was answered with `status` after `took`.
pub fn answered(status: StatusCode, took: Duration) {
    metrics::counter!("sandbar_proxy_requests_total", "status" => status.as_str().to_string())
        .increment(1);
    metrics::histogram!("sandbar_proxy_request_seconds").record(took.as_secs_f64());
}

/// A body whose data is counted into the bytes total of its direction as
/// it passes (`in`: to the sandbox, `out`: to the client). A named type, not
/// a `map_frame` closure, so the upstream pool can name its request body.
pub struct Counted<B> {
    inner: B,
    bytes: metrics::Counter,
}

pub fn counted<B>(inner: B, direction: &'static str) -> Counted<B> {
    Counted {
        inner,
        bytes: metrics::counter!("sandbar_proxy_bytes_total", "direction" => direction),
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes.increment(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An upgraded connection (WebSocket) ended after carrying these bytes.
pub fn tunnelled(to_sandbox: u64, to_client: u64) {
    metrics::counter!("sandbar_proxy_bytes_total", "direction" => "in").increment(to_sandbox);
    metrics::counter!("sandbar_proxy_bytes_total", "direction" => "out").increment(to_client);
}
