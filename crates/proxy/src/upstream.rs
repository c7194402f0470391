//! Connections to servers inside sandboxes: dialed through the runtime's
//! [`Catalog`] and kept alive per (sandbox, port), so a stream of requests
//! does not pay a dial (a namespace switch) each time.
//!
//! A small pool of hyper HTTP/1.1 client connections rather than
//! hyper-util's legacy `Client`, which spawns a task per request to hand the
//! connection back and re-parses an absolute URI as its pool key; here a
//! connection goes back to the pool when its response body ends, keyed by
//! (sandbox id, port).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use sandbar_runtime::{Catalog, DialError};
use tracing::debug;

/// What goes to a sandbox: the client's body, counted as it passes.
pub type ToSandbox = crate::telemetry::Counted<Incoming>;

/// How long an unused kept-alive connection to a sandbox stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_PER_PORT: usize = 64;

/// How long a refused connection is retried while the sandbox lives. A client
/// commonly starts a server and fetches its URL at once (the E2B quickstart
/// does exactly that); E2B's proxy rides over that start-up race the same way.
/// A port that stays closed is reported after this window.
const PORT_OPEN_WAIT: Duration = Duration::from_secs(3);
const PORT_RETRY_FIRST: Duration = Duration::from_millis(5);
const PORT_RETRY_MAX: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

type Key = (String, u16);

struct Idle {
    sender: SendRequest<ToSandbox>,
    since: Instant,
}

type IdleMap = Mutex<HashMap<Key, Vec<Idle>>>;

pub struct Upstreams {
    catalog: Arc<dyn Catalog>,
    idle: Arc<IdleMap>,
}

impl Upstreams {
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        let idle: Arc<IdleMap> = Arc::default();
        tokio::spawn(sweep(Arc::downgrade(&idle)));
        Self { catalog, idle }
    }

    /// Sends `req` (path-and-query URI, Host set) to `port` of sandbox `id`.
    /// With `upgrade` the connection is handed to the upgrade and not reused.
    pub async fn send(
        &self,
        id: &str,
        port: u16,
        mut req: Request<ToSandbox>,
        upgrade: bool,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let key: Key = (id.to_string(), port);
        loop {
            let (mut sender, reused) = match self.checkout(&key) {
                Some(s) => (s, true),
                None => (self.connect(id, port).await?, false),
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(e.into());
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let back = (!upgrade).then(|| (sender, key, Arc::downgrade(&self.idle)));
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        ended: false,
                        back,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // The server closed a kept-alive connection before
                    // reading the request: safe to send it on another one.
                    Some(unsent) if reused => {
                        debug!(id, port, error = %e.error(), "kept-alive connection was closed; retrying");
                        req = unsent;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    fn checkout(&self, key: &Key) -> Option<SendRequest<ToSandbox>> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(key)?;
        let found = loop {
            match list.pop() {
                Some(i) if !i.sender.is_closed() => break Some(i.sender),
                Some(_) => continue,
                None => break None,
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Dials `port` in sandbox `id`, retrying a refused connection with a
    /// growing pause for up to [`PORT_OPEN_WAIT`]; an unknown sandbox fails at once.
    async fn dial(&self, id: &str, port: u16) -> Result<tokio::net::TcpStream, DialError> {
        let deadline = Instant::now() + PORT_OPEN_WAIT;
        let mut pause = PORT_RETRY_FIRST;
        loop {
            match self.catalog.dial(id, port).await {
                Err(DialError::PortClosed(_)) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(PORT_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    async fn connect(&self, id: &str, port: u16) -> Result<SendRequest<ToSandbox>, UpstreamError> {
        let stream = self.dial(id, port).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "sandbox connection ended with an error");
            }
        });
        Ok(sender)
    }
}

fn put_back(pool: &Weak<IdleMap>, key: Key, sender: SendRequest<ToSandbox>) {
    let Some(pool) = pool.upgrade() else { return };
    if sender.is_closed() {
        return;
    }
    let mut idle = pool.lock().expect("pool lock");
    let list = idle.entry(key).or_default();
    if list.len() < MAX_IDLE_PER_PORT {
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

/// Drops connections idle too long or closed (their sandbox is gone), so
/// neither sockets nor map entries pile up.
async fn sweep(pool: Weak<IdleMap>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.lock().expect("pool lock");
        idle.retain(|_, list| {
            list.retain(|i| !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    }
}

/// The sandbox's response body; its connection returns to the pool once the
/// body has been read to the end (a body dropped early closes it instead).
pub struct PooledBody {
    body: Incoming,
    ended: bool,
    back: Option<(SendRequest<ToSandbox>, Key, Weak<IdleMap>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if !(self.ended || self.body.is_end_stream()) {
            return;
        }
        if let Some((sender, key, pool)) = self.back.take() {
            put_back(&pool, key, sender);
        }
    }
}
