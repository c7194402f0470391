//! WebSocket echo round trips: one connection, one message in flight, each
//! timed from send to its echo.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::create::ms;
use crate::http::Io;

/// `uri` gives the Host header (`ws://{host}/`); `stream` is already
/// connected (and TLS-wrapped when it must be).
pub async fn echo_round_trips<S: Io + 'static>(stream: S, uri: &str, n: usize) -> Result<Vec<f64>> {
    let request = uri
        .into_client_request()
        .with_context(|| format!("WebSocket request for {uri}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .context("WebSocket handshake")?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("sandbar-bench echo {i:08}");
        let start = Instant::now();
        ws.send(Message::text(text.clone()))
            .await
            .context("sending a WebSocket message")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == text => break,
                Some(Ok(Message::Text(t))) => {
                    bail!("echo mismatch: sent {text:?}, got {:?}", t.as_str())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected WebSocket message {other:?}"),
                Some(Err(e)) => return Err(e).context("reading the echo"),
                None => bail!("the WebSocket closed after {i} echoes"),
            }
        }
        samples.push(ms(start.elapsed()));
    }
    let _ = ws.close(None).await;
    Ok(samples)
}
