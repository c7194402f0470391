//! The response stream of `Start` and `Connect`: a start event, the process's
//! events as they come, keepalives while it is quiet, and the end.

use std::time::Duration;

use connectrpc::{ConnectError, ServiceStream};
use futures::stream;
use sandbar_proto::process::ProcessEvent;
use tokio::sync::mpsc;

use super::events::{self, EndInfo, Event};

/// Keepalive interval when the client sends no `Keepalive-Ping-Interval`.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// Where a stream's events come from.
pub enum Events {
    Live(mpsc::Receiver<Event>),
    Ended(EndInfo),
}

enum State {
    Start(Events),
    Live(mpsc::Receiver<Event>),
    Ended(EndInfo),
    Done,
}

/// Builds the stream. Each item is handed to connectrpc, which writes it out
/// as soon as the next one is not ready yet, so every event is flushed at once.
pub fn event_stream<R: Send + 'static>(
    pid: u32,
    source: Events,
    keepalive: Duration,
    wrap: fn(ProcessEvent) -> R,
) -> ServiceStream<R> {
    let items = stream::unfold(State::Start(source), move |state| async move {
        let (event, next) = match state {
            State::Done => return None,
            State::Start(Events::Live(rx)) => (events::start_event(pid), State::Live(rx)),
            State::Start(Events::Ended(end)) => (events::start_event(pid), State::Ended(end)),
            State::Ended(end) => (events::to_proto(&Event::End(end)), State::Done),
            State::Live(mut rx) => {
                // The timer restarts on every event: keepalives only fill silence.
                match tokio::time::timeout(keepalive, rx.recv()).await {
                    Err(_) => (events::keepalive_event(), State::Live(rx)),
                    Ok(None) => return None,
                    Ok(Some(event @ Event::End(_))) => (events::to_proto(&event), State::Done),
                    Ok(Some(event)) => (events::to_proto(&event), State::Live(rx)),
                }
            }
        };
        Some((Ok::<_, ConnectError>(wrap(event)), next))
    });
    Box::pin(items)
}
