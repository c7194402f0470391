//! The seam through which the runtime asks servers inside a sandbox
//! something (envd's `/init` and `/health`, the code interpreter's
//! readiness) without speaking their protocol: the runtime dials the port
//! in the sandbox's network, and a [`SandboxClient`] given by whoever
//! starts it (`sandbar serve` wires `sandbar-sandbox-client`) sends the
//! request on that stream.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::BoxFuture;

/// A request to a server inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerRequest {
    pub method: &'static str,
    pub path: String,
    /// JSON, or empty.
    pub body: String,
    /// envd's access token (`X-Access-Token`).
    pub token: Option<String>,
}

/// What the server answered: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerAnswer {
    pub status: u16,
    pub body: String,
}

type SendFn = dyn Fn(TcpStream, InnerRequest) -> BoxFuture<'static, Result<InnerAnswer, String>>
    + Send
    + Sync;

/// Sends an [`InnerRequest`] on a stream already connected inside the
/// sandbox, and reads the answer.
#[derive(Clone)]
pub struct SandboxClient(Arc<SendFn>);

impl SandboxClient {
    pub fn new(
        send: impl Fn(TcpStream, InnerRequest) -> BoxFuture<'static, Result<InnerAnswer, String>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self(Arc::new(send))
    }

    pub(crate) async fn send(
        &self,
        stream: TcpStream,
        request: InnerRequest,
    ) -> Result<InnerAnswer, String> {
        (self.0)(stream, request).await
    }
}

impl std::fmt::Debug for SandboxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxClient")
    }
}
