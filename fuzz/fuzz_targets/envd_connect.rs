//! Feeds one HTTP request (see `sandbar_fuzz::TextRequest`: method path,
//! Content-Type, compression and timeout headers, the body in
//! `X-Fuzz-Chunk`-byte pieces; with `X-Fuzz-Envelope: <flags>[ gzip]` knobs
//! the body's 0x1e-separated pieces are framed by the harness as envelopes
//! of correct length, `X-Fuzz-Gzip` compresses the whole body, `X-Fuzz-User`
//! adds Basic auth) to `connectrpc::ConnectRpcService` serving envd's two
//! services, `process.Process` and `filesystem.Filesystem`, registered the way
//! envd's `server::app` registers them (same generated stubs, default limits
//! and compression). That service is where envd's request bodies are split
//! into 5-byte-header envelopes, decompressed and decoded from JSON or proto
//! into envd's message types.
//!
//! The handlers are stand-ins, not envd's: envd's own would start processes
//! and touch files named by the fuzzer. Like envd's, they turn the request
//! into an owned message (and read a client stream to its end) and resolve
//! the paths the filesystem calls carry with envd's `paths::resolve`.
//!
//! Beyond "no panic": every decoded message survives a proto encode/decode
//! round trip unchanged, every resolved path is absolute and normalized, and
//! the response (a Connect/gRPC error or answer) is produced in bounded time.

#![no_main]

use std::convert::Infallible;
use std::fmt::Debug;
use std::io::Write;
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use buffa::Message;
use bytes::Bytes;
use connectrpc::codec::{decode_proto, encode_proto};
use connectrpc::{
    ConnectError, ConnectRpcService, InboundStream, RequestContext, Response, ServiceRequest,
    ServiceResult, ServiceStream,
};
use envd::fuzzing::{from_basic_auth, resolve, UserInfo};
use futures::StreamExt;
use http::{HeaderValue, Request};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use sandbar_fuzz::{chunked, TextRequest};
use sandbar_proto::filesystem::*;
use sandbar_proto::process::*;
use tower::ServiceExt;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The body as sent: framed into envelopes when the input asks for them.
fn body_frames(text: &TextRequest<'_>) -> Vec<Bytes> {
    let envelopes = text.knobs("envelope");
    if envelopes.is_empty() {
        if text.flag("gzip") {
            return chunked(&gzip(text.body), None);
        }
        return text.body_chunks();
    }
    let mut out = Vec::new();
    let mut pieces = text.body.split(|&b| b == 0x1e);
    for spec in envelopes {
        let Some(piece) = pieces.next() else { break };
        let spec = std::str::from_utf8(spec).unwrap_or("0");
        let mut words = spec.split_whitespace();
        let flags = words.next().and_then(|f| f.parse::<u8>().ok()).unwrap_or(0);
        let payload = if words.next() == Some("gzip") {
            gzip(piece)
        } else {
            piece.to_vec()
        };
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    // What is left goes as it is.
    for piece in pieces {
        out.push(0x1e);
        out.extend_from_slice(piece);
    }
    chunked(&out, text.knob_str("chunk").and_then(|c| c.parse().ok()))
}

/// Decoded messages must round-trip through the binary encoding.
fn round_trip<M: Message + PartialEq + Debug>(m: &M) {
    let bytes = encode_proto(m).expect("a decoded message encodes");
    let back: M = decode_proto(&bytes).expect("an encoded message decodes");
    assert_eq!(&back, m, "proto round trip changed the message");
}

fn owned<M>(request: ServiceRequest<'_, M>) -> M
where
    M: Message + PartialEq + Debug + connectrpc::HasMessageView,
{
    let m = request.to_owned_message();
    round_trip(&m);
    m
}

/// As envd's filesystem service does: the Basic-auth user (a fixed stand-in
/// for the passwd lookup), then `paths::resolve`.
fn resolve_for(ctx: &RequestContext, path: &str) -> Result<PathBuf, ConnectError> {
    let name = from_basic_auth(ctx.headers()).unwrap_or_else(|| "user".into());
    let user = UserInfo {
        home: PathBuf::from(format!("/home/{}", name.replace('/', "_"))),
        name,
        uid: 1000,
        gid: 1000,
        shell: PathBuf::from("/bin/bash"),
    };
    match resolve(path, &user, None) {
        Ok(p) => {
            let mut parts = p.components();
            assert_eq!(parts.next(), Some(Component::RootDir), "{p:?}");
            assert!(parts.all(|c| matches!(c, Component::Normal(_))), "{p:?}");
            Ok(p)
        }
        Err(e) => Err(ConnectError::invalid_argument(e.to_string())),
    }
}

fn one<T: Send + 'static>(item: T) -> ServiceResult<ServiceStream<T>> {
    Response::stream_ok(futures::stream::iter([Ok(item)]))
}

struct Stub;

#[allow(refining_impl_trait)]
impl Process for Stub {
    async fn list(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        owned(r);
        Response::ok(ListResponse::default())
    }
    async fn connect(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        owned(r);
        one(ConnectResponse::default())
    }
    async fn start(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        owned(r);
        one(StartResponse::default())
    }
    async fn update(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        owned(r);
        Response::ok(UpdateResponse::default())
    }
    async fn stream_input(
        &self,
        _: RequestContext,
        mut requests: InboundStream<StreamInputRequest>,
    ) -> ServiceResult<StreamInputResponse> {
        while let Some(message) = requests.next().await {
            round_trip(&message?.to_owned_message());
        }
        Response::ok(StreamInputResponse::default())
    }
    async fn send_input(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        owned(r);
        Response::ok(SendInputResponse::default())
    }
    async fn send_signal(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        owned(r);
        Response::ok(SendSignalResponse::default())
    }
    async fn close_stdin(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        owned(r);
        Response::ok(CloseStdinResponse::default())
    }
}

#[allow(refining_impl_trait)]
impl Filesystem for Stub {
    async fn stat(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        resolve_for(&ctx, &owned(r).path)?;
        Response::ok(StatResponse::default())
    }
    async fn make_dir(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        resolve_for(&ctx, &owned(r).path)?;
        Response::ok(MakeDirResponse::default())
    }
    async fn r#move(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let m = owned(r);
        resolve_for(&ctx, &m.source)?;
        resolve_for(&ctx, &m.destination)?;
        Response::ok(MoveResponse::default())
    }
    async fn list_dir(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        resolve_for(&ctx, &owned(r).path)?;
        Response::ok(ListDirResponse::default())
    }
    async fn remove(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        resolve_for(&ctx, &owned(r).path)?;
        Response::ok(RemoveResponse::default())
    }
    async fn watch_dir(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        resolve_for(&ctx, &owned(r).path)?;
        one(WatchDirResponse::default())
    }
    async fn create_watcher(
        &self,
        ctx: RequestContext,
        r: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        resolve_for(&ctx, &owned(r).path)?;
        Response::ok(CreateWatcherResponse::default())
    }
    async fn get_watcher_events(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        owned(r);
        Response::ok(GetWatcherEventsResponse::default())
    }
    async fn remove_watcher(
        &self,
        _: RequestContext,
        r: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        owned(r);
        Response::ok(RemoveWatcherResponse::default())
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    service: ConnectRpcService,
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let stub = Arc::new(Stub);
        let rpc = connectrpc::Router::new();
        let rpc = ProcessExt::register(stub.clone(), rpc);
        let rpc = FilesystemExt::register(stub, rpc);
        Harness {
            // envd serves on one current-thread runtime too.
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            service: ConnectRpcService::new(rpc),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let text = TextRequest::parse(data);
    let mut headers = text.header_map();
    if let Some(user) = text.knob_str("user") {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {encoded}")) {
            headers.insert("authorization", v);
        }
    }
    let frames = body_frames(&text);
    let body = StreamBody::new(futures::stream::iter(
        frames
            .into_iter()
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ));
    let Ok(mut req) = Request::builder()
        .method(text.method)
        .uri(text.target)
        .body(body)
    else {
        return;
    };
    *req.headers_mut() = headers;

    h.runtime.block_on(async {
        let served = async {
            let resp = h.service.clone().oneshot(req).await.unwrap();
            // The whole answer, trailers included; a broken body is the
            // client's problem, not a crash.
            let _ = resp.into_body().collect().await;
        };
        tokio::time::timeout(Duration::from_secs(3), served)
            .await
            .expect("the request did not complete within 3 s");
    });
});
