//! The proxy end to end on loopback: TLS, HTTP/1.1 and HTTP/2 clients,
//! streaming, WebSocket, E2B error bodies, traffic tokens, headers.

mod harness;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use harness::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use sandbar_proxy::api_service;
use sandbar_runtime::Route;
use tokio_tungstenite::tungstenite::Message;

const ID: &str = "sbx1abc";

async fn setup(route: Route) -> (Harness, Arc<Backend>) {
    setup_trusting(route, Vec::new()).await
}

async fn setup_trusting(route: Route, trusted: Vec<ipnet::IpNet>) -> (Harness, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    let addr = start_backend(backend.clone()).await;
    let h = Harness::start_trusting(None, trusted).await;
    h.catalog
        .add(ID, route, &[(3000, addr), (sandbar_proxy::ENVD_PORT, addr)]);
    (h, backend)
}

fn host(port: u16) -> String {
    format!("{port}-{ID}.{DOMAIN}")
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let (h, _) = setup_trusting(Route::default(), vec!["127.0.0.0/8".parse().unwrap()]).await;
    let mut c = Client::connect(&h, Mode::Plain1, &host(3000)).await;
    let resp = c
        .get(
            &host(3000),
            "/echo",
            &[
                ("x-forwarded-for", "10.9.8.7"),
                ("forwarded", "for=10.9.8.7"),
            ],
        )
        .await;
    let seen = body_json(resp).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(seen["headers"]["forwarded"], "for=10.9.8.7");
    // The same request from an untrusted peer: replaced, not appended.
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Plain1, &host(3000)).await;
    let resp = c
        .get(
            &host(3000),
            "/echo",
            &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")],
        )
        .await;
    let seen = body_json(resp).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("forwarded").is_none(), "{seen}");
}

#[tokio::test]
async fn h1_h2_and_tls_reach_the_app_with_forwarded_headers() {
    let (h, _) = setup(Route::default()).await;
    for mode in [Mode::Plain1, Mode::Tls1, Mode::Tls2] {
        let mut c = Client::connect(&h, mode, &host(3000)).await;
        let resp = c
            .get(
                &format!("{}:8443", host(3000)),
                "/echo?q=1",
                &[("x-forwarded-for", "10.9.8.7")],
            )
            .await;
        assert_status(&resp, StatusCode::OK);
        assert!(
            !resp.headers().contains_key("x-hop"),
            "{mode:?}: hop-by-hop header passed"
        );
        let seen = body_json(resp).await;
        let hd = &seen["headers"];
        assert_eq!(seen["uri"], "/echo?q=1", "{mode:?}");
        assert_eq!(seen["version"], "HTTP/1.1", "{mode:?}");
        assert_eq!(
            hd["host"],
            format!("{}:8443", host(3000)),
            "{mode:?}: Host must pass unchanged"
        );
        assert_eq!(hd["x-forwarded-host"], format!("{}:8443", host(3000)));
        // The client is no trusted proxy: what it claims is replaced.
        assert_eq!(hd["x-forwarded-for"], "127.0.0.1", "{mode:?}");
        let proto = if mode == Mode::Plain1 {
            "http"
        } else {
            "https"
        };
        assert_eq!(hd["x-forwarded-proto"], proto, "{mode:?}");
    }
}

#[tokio::test]
async fn kept_alive_requests_reuse_one_dialed_connection() {
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Tls2, &host(3000)).await;
    for _ in 0..20 {
        let resp = c.get(&host(3000), "/echo", &[]).await;
        assert_status(&resp, StatusCode::OK);
        body_string(resp).await;
    }
    assert_eq!(
        h.catalog.dials.load(Ordering::SeqCst),
        1,
        "the pool should serve sequential requests"
    );
}

#[tokio::test]
async fn sse_arrives_event_by_event_over_h1_and_h2() {
    for mode in [Mode::Plain1, Mode::Tls2] {
        let (h, backend) = setup(Route::default()).await;
        let mut c = Client::connect(&h, mode, &host(3000)).await;
        let resp = c
            .get(&host(3000), "/sse", &[("accept", "text/event-stream")])
            .await;
        assert_status(&resp, StatusCode::OK);
        let mut body = resp.into_body();
        let mut seen = String::new();
        // The backend holds "two" back until we have "one": a buffering
        // proxy would stall here.
        while !seen.contains("data: one") {
            let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
                .await
                .unwrap_or_else(|_| panic!("{mode:?}: first event did not arrive on its own"))
                .unwrap()
                .unwrap();
            seen.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
        }
        assert!(!seen.contains("two"));
        backend.sse_gate.notify_one();
        let rest = tokio::time::timeout(Duration::from_secs(3), body.collect())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&rest.to_bytes()).unwrap());
        assert_eq!(seen, "data: one\n\ndata: two\n\n", "{mode:?}");
    }
}

#[tokio::test]
async fn request_bodies_stream_through() {
    let (h, _) = setup(Route::default()).await;
    for mode in [Mode::Plain1, Mode::Tls2] {
        let mut c = Client::connect(&h, mode, &host(3000)).await;
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            for _ in 0..64 {
                tx.send(Ok(hyper::body::Frame::data(Bytes::from(vec![
                    7u8;
                    16 * 1024
                ]))))
                .await
                .unwrap();
            }
        });
        let req = Request::post("/count")
            .header("host", host(3000))
            .body(http_body_util::StreamBody::new(rx).boxed_unsync())
            .unwrap();
        let resp = c.send(req).await;
        assert_status(&resp, StatusCode::OK);
        assert_eq!(
            body_string(resp).await,
            (64 * 16 * 1024).to_string(),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn websocket_echo_through_tls() {
    let (h, _) = setup(Route::default()).await;
    let ws_addr = start_ws_echo().await;
    h.catalog.add("wsbox", Route::default(), &[(8080, ws_addr)]);
    let ws_host = format!("8080-wsbox.{DOMAIN}");
    let stream = h.tls_stream(&ws_host, &[b"http/1.1"]).await;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("wss://{ws_host}/chat"), stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn error_bodies_are_the_e2b_ones() {
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Tls1, &host(3000)).await;

    let resp = c.get(&format!("3000-gone.{DOMAIN}"), "/", &[]).await;
    assert_status(&resp, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        body_string(resp).await,
        r#"{"sandboxId":"gone","message":"The sandbox was not found","code":502}"#
    );

    let resp = c.get(&host(4000), "/", &[]).await;
    assert_status(&resp, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body_string(resp).await,
        format!(
            r#"{{"sandboxId":"{ID}","message":"The sandbox is running but port is not open","port":4000,"code":502}}"#
        )
    );

    // A browser navigating gets a page with the same facts.
    let resp = c
        .get(
            &host(4000),
            "/",
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        )
        .await;
    assert_status(&resp, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let page = body_string(resp).await;
    assert!(
        page.contains("The sandbox is running but port is not open")
            && page.contains("4000")
            && page.contains(ID)
    );

    // (The bare domain is the dashboard's: see
    // the_bare_domain_goes_to_the_dashboard_service.)
    for bad in [
        format!("x-{ID}.{DOMAIN}"),
        "example.org".into(),
        format!("3000-a_b.{DOMAIN}"),
    ] {
        let resp = c.get(&bad, "/", &[]).await;
        assert_status(&resp, StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = body_json(resp).await;
        assert_eq!(body["code"], 400, "{bad}");
    }
}

#[tokio::test]
async fn envd_control_routes_are_404_whatever_the_spelling() {
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Plain1, &host(3000)).await;
    for path in [
        "/init",
        "/init/",
        "//init",
        "/files/../init",
        "/%69nit",
        "/upgrade",
    ] {
        for sandbox in [ID, "unknown"] {
            let req = Request::post(path)
                .header("host", format!("49983-{sandbox}.{DOMAIN}"))
                .body(empty())
                .unwrap();
            let resp = c.send(req).await;
            assert_status(&resp, StatusCode::NOT_FOUND);
            let body = body_json(resp).await;
            assert_eq!(body["code"], 404, "{path}");
            assert!(body.get("sandboxId").is_none());
        }
    }
    // Other envd routes pass, and /init on an app port is the app's business.
    let resp = c.get(&host(49983), "/health", &[]).await;
    assert_status(&resp, StatusCode::OK);
    body_string(resp).await;
    let resp = c.get(&host(3000), "/init", &[]).await;
    assert_status(&resp, StatusCode::OK);
    body_string(resp).await;
}

#[tokio::test]
async fn private_sandbox_needs_the_token_header_or_cookie() {
    let route = Route {
        traffic_access_token: Some("s3cret".into()),
        mask_request_host: None,
    };
    let (h, _) = setup(route).await;
    let mut c = Client::connect(&h, Mode::Tls2, &host(3000)).await;
    let hst = host(3000);

    let resp = c.get(&hst, "/echo", &[]).await;
    assert_status(&resp, StatusCode::FORBIDDEN);
    assert_eq!(
        body_string(resp).await,
        format!(
            r#"{{"sandboxId":"{ID}","message":"Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing","code":403}}"#
        )
    );
    let resp = c
        .get(&hst, "/echo", &[("e2b-traffic-access-token", "wrong")])
        .await;
    assert_status(&resp, StatusCode::FORBIDDEN);
    assert_eq!(
        body_string(resp).await,
        format!(
            r#"{{"sandboxId":"{ID}","message":"Sandbox is secured with traffic access token. Provided token in header 'e2b-traffic-access-token' is invalid","code":403}}"#
        )
    );
    let resp = c
        .get(&hst, "/echo", &[("e2b-traffic-access-token", "s3cret")])
        .await;
    assert_status(&resp, StatusCode::OK);
    body_string(resp).await;

    // envd checks its own token.
    let resp = c.get(&host(49983), "/health", &[]).await;
    assert_status(&resp, StatusCode::OK);
    body_string(resp).await;

    // A browser: query parameter -> cookie + redirect to the clean URL.
    let resp = c
        .get(
            &hst,
            "/echo?a=1&e2b_traffic_access_token=s3cret",
            &[("accept", "text/html")],
        )
        .await;
    assert_status(&resp, StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/echo?a=1");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let resp = c
        .get(
            &hst,
            "/echo?a=1",
            &[
                ("accept", "text/html"),
                ("cookie", &cookie),
                ("cookie", "app=1"),
            ],
        )
        .await;
    assert_status(&resp, StatusCode::OK);
    let seen = body_json(resp).await;
    assert_eq!(
        seen["headers"]["cookie"], "app=1",
        "the proxy's cookie must not reach the app"
    );

    let resp = c
        .get(
            &hst,
            "/",
            &[
                ("accept", "text/html"),
                ("cookie", "sandbar_traffic_sbx1abc=forged"),
            ],
        )
        .await;
    assert_status(&resp, StatusCode::FORBIDDEN);
    assert!(body_string(resp).await.contains("is invalid"));
}

#[tokio::test]
async fn masked_host_and_header_routing() {
    let route = Route {
        traffic_access_token: None,
        mask_request_host: Some("localhost:${PORT}".into()),
    };
    let (h, _) = setup(route).await;
    let mut c = Client::connect(&h, Mode::Plain1, &host(3000)).await;
    let resp = c.get(&host(3000), "/echo", &[]).await;
    let seen = body_json(resp).await;
    assert_eq!(seen["headers"]["host"], "localhost:3000");
    assert_eq!(seen["headers"]["x-forwarded-host"], host(3000));

    // E2B_SANDBOX_URL style: one host, the target in headers.
    for shared in ["localhost:8080", "127.0.0.1", &format!("sandbox.{DOMAIN}")] {
        let resp = c
            .get(
                shared,
                "/echo",
                &[("E2b-Sandbox-Id", ID), ("E2b-Sandbox-Port", "3000")],
            )
            .await;
        assert_status(&resp, StatusCode::OK);
        body_string(resp).await;
    }
    let resp = c.get("localhost", "/echo", &[("E2b-Sandbox-Id", ID)]).await;
    assert_status(&resp, StatusCode::BAD_REQUEST);
    assert!(body_string(resp).await.contains("E2b-Sandbox-Port"));
}

#[tokio::test]
async fn api_host_goes_to_the_api_service() {
    let api = tower::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let xff = req.headers().get("x-forwarded-proto").cloned();
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::CREATED)
                .header("x-seen-proto", xff.unwrap())
                .body(http_body_util::Full::new(Bytes::from(format!(
                    "api {}",
                    req.uri().path()
                ))))
                .unwrap(),
        )
    });
    let h = Harness::start(Some(api_service(api))).await;
    let mut c = Client::connect(&h, Mode::Tls2, &format!("api.{DOMAIN}")).await;
    let resp = c.get(&format!("api.{DOMAIN}"), "/v2/sandboxes", &[]).await;
    assert_status(&resp, StatusCode::CREATED);
    assert_eq!(resp.headers()["x-seen-proto"], "https");
    assert_eq!(body_string(resp).await, "api /v2/sandboxes");

    let (bare, _) = setup(Route::default()).await;
    let mut c = Client::connect(&bare, Mode::Plain1, "x").await;
    let resp = c.get(&format!("api.{DOMAIN}"), "/", &[]).await;
    assert_status(&resp, StatusCode::NOT_FOUND);
    assert_eq!(body_json(resp).await["code"], 404);
}

#[tokio::test]
async fn the_bare_domain_goes_to_the_dashboard_service() {
    let service = |name: &'static str| {
        api_service(tower::service_fn(
            move |req: Request<hyper::body::Incoming>| async move {
                let proto = req.headers().get("x-forwarded-proto").cloned();
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("x-seen-proto", proto.unwrap())
                        .body(http_body_util::Full::new(Bytes::from(format!(
                            "{name} {}",
                            req.uri().path()
                        ))))
                        .unwrap(),
                )
            },
        ))
    };
    let h = Harness::start_with(Some(service("api")), Some(service("dashboard")), Vec::new()).await;
    let mut c = Client::connect(&h, Mode::Tls2, DOMAIN).await;
    let resp = c.get(DOMAIN, "/session", &[]).await;
    assert_status(&resp, StatusCode::OK);
    assert_eq!(resp.headers()["x-seen-proto"], "https");
    assert_eq!(body_string(resp).await, "dashboard /session");
    let mut c = Client::connect(&h, Mode::Tls1, DOMAIN).await;
    let resp = c.get(&format!("{DOMAIN}:443"), "/", &[]).await;
    assert_eq!(body_string(resp).await, "dashboard /");
    let mut c = Client::connect(&h, Mode::Tls1, &format!("api.{DOMAIN}")).await;
    let resp = c.get(&format!("api.{DOMAIN}"), "/session", &[]).await;
    assert_eq!(body_string(resp).await, "api /session");

    // Without a dashboard the bare domain is a 404, as before it was a 400.
    let (bare, _) = setup(Route::default()).await;
    let mut c = Client::connect(&bare, Mode::Plain1, "x").await;
    let resp = c.get(DOMAIN, "/", &[]).await;
    assert_status(&resp, StatusCode::NOT_FOUND);
    assert_eq!(body_json(resp).await["code"], 404);
}

#[tokio::test]
async fn killed_sandbox_answers_not_found_and_shutdown_ends_serving() {
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Tls1, &host(3000)).await;
    let resp = c.get(&host(3000), "/echo", &[]).await;
    assert_status(&resp, StatusCode::OK);
    body_string(resp).await;

    // Killed: the catalog forgets it, and pooled connections are not used.
    h.catalog.remove(ID);
    let resp = c.get(&host(3000), "/echo", &[]).await;
    assert_status(&resp, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body_json(resp).await["message"],
        "The sandbox was not found"
    );

    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), h.served)
        .await
        .expect("serve returns")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(h.plain).await.is_err(),
        "listener must be closed"
    );
}

#[tokio::test]
async fn certificate_names_the_wildcard_and_rejects_other_names() {
    let (h, _) = setup(Route::default()).await;
    let tcp = tokio::net::TcpStream::connect(h.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("3000-x.other.test").unwrap();
    assert!(h.tls_connector(&[b"h2"]).connect(name, tcp).await.is_err());
    for ok in [
        format!("api.{DOMAIN}"),
        DOMAIN.to_string(),
        "localhost".into(),
    ] {
        let tcp = tokio::net::TcpStream::connect(h.tls).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(ok.clone()).unwrap();
        h.tls_connector(&[b"h2"])
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[tokio::test]
async fn servers_that_close_after_each_response_still_work() {
    // Like `python -m http.server`: HTTP/1.0 style, one response a connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclosing")
                .await;
        }
    });
    let h = Harness::start(None).await;
    h.catalog.add("oneshot", Route::default(), &[(8000, addr)]);
    let host = format!("8000-oneshot.{DOMAIN}");
    let mut c = Client::connect(&h, Mode::Tls2, &host).await;
    for _ in 0..5 {
        let resp = c.get(&host, "/", &[]).await;
        assert_status(&resp, StatusCode::OK);
        assert_eq!(body_string(resp).await, "closing");
    }
    assert_eq!(h.catalog.dials.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn bodiless_responses_return_their_connection() {
    let (h, _) = setup(Route::default()).await;
    let mut c = Client::connect(&h, Mode::Plain1, &host(3000)).await;
    for _ in 0..5 {
        let req = Request::head("/echo")
            .header("host", host(3000))
            .body(empty())
            .unwrap();
        let resp = c.send(req).await;
        assert_status(&resp, StatusCode::OK);
        body_string(resp).await;
    }
    assert_eq!(h.catalog.dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_that_starts_just_after_the_request_is_reached() {
    let (h, _) = setup(Route::default()).await;
    // Reserve a loopback port with nothing listening on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    h.catalog.add("late1", Route::default(), &[(5000, addr)]);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
        tokio::io::AsyncWriteExt::write_all(
            &mut sock,
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlate",
        )
        .await
        .unwrap();
    });
    let started = std::time::Instant::now();
    let mut c = Client::connect(&h, Mode::Plain1, "").await;
    let resp = c.get(&format!("5000-late1.{DOMAIN}"), "/", &[]).await;
    assert_status(&resp, StatusCode::OK);
    assert_eq!(body_string(resp).await, "late");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "reached {:?} after the request",
        started.elapsed()
    );
}
