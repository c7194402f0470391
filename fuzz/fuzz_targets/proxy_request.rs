//! Feeds one client request (see `sandbar_fuzz::TextRequest`; knobs
//! `X-Fuzz-Peer`, `-Trusted`, `-Tls`, `-Http2`, `-Id`, `-Token`, `-Mask`,
//! `-Port`) through what the proxy does to it before it reaches a sandbox,
//! in the proxy's order:
//! `is_control_path` (envd control routes), the traffic-token check of a
//! private sandbox (`traffic_token::check`: header, query parameter, cookie),
//! then `wants_upgrade`, `strip_hop_by_hop`, `join_cookies`, `add_forwarded`
//! and `set_host`; and the refusal pages the proxy answers with instead.
//!
//! Beyond "no panic": the control-path check cannot be dodged by
//! percent-encoding or extra slashes; a header token passes exactly when it
//! is the token; after a pass the proxy's cookie never reaches the app; a
//! redirect drops the token from the URL; no hop-by-hop field survives;
//! `X-Forwarded-For` ends with the peer and is only the peer for an untrusted
//! one; one `Cookie` field is left; refusal pages escape what the client
//! sent and their JSON carries the status code.

#![no_main]

use std::net::IpAddr;

use http::header::{COOKIE, HOST, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Version};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sandbar_fuzz::TextRequest;
use sandbar_proxy::fuzzing::{
    add_forwarded, check_traffic_token, is_control_path, join_cookies, set_host, strip_hop_by_hop,
    wants_html, wants_upgrade, Refusal, Verdict,
};
use sandbar_proxy::{TOKEN_HEADER, TOKEN_QUERY};

/// Everything but the path separator, so the encoded path has the same segments.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');

fn body_text(resp: http::Response<sandbar_proxy::ProxyBody>) -> String {
    let bytes = futures::executor::block_on(resp.into_body().collect())
        .expect("a refusal body cannot fail")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("refusal bodies are UTF-8")
}

/// `<` in the page; what the client sent must add none.
fn tags(refusal: &Refusal, host: Option<&str>) -> usize {
    let mut html_headers = HeaderMap::new();
    html_headers.insert("accept", HeaderValue::from_static("text/html"));
    body_text(refusal.response(&html_headers, host))
        .matches('<')
        .count()
}

fn check_refusals(path: &str, id: &str, host: Option<&str>, headers: &HeaderMap) {
    let clean = |s: &str| s.replace(['<', '>'], "x");
    let pairs = [
        (
            Refusal::ControlRoute { path: path.into() },
            Refusal::ControlRoute { path: clean(path) },
        ),
        (
            Refusal::TokenInvalid { id: id.into() },
            Refusal::TokenInvalid { id: clean(id) },
        ),
    ];
    for (refusal, cleaned) in pairs {
        assert_eq!(
            tags(&refusal, host),
            tags(&cleaned, host.map(clean).as_deref()),
            "unescaped input in {refusal:?}"
        );
        let status = refusal.status().as_u16();
        let json: serde_json::Value = serde_json::from_str(&refusal.json()).expect("JSON body");
        assert_eq!(json["code"], status);
        let _ = body_text(refusal.response(headers, host));
    }
    let _ = wants_html(headers);
}

fn check_control_path(path: &str) {
    let verdict = is_control_path(path);
    // Extra slashes and a trailing one change nothing.
    assert_eq!(is_control_path(&format!("/{path}/")), verdict, "{path:?}");
    if !path.contains('%') {
        let encoded = utf8_percent_encode(path, ENCODE).to_string();
        assert_eq!(
            is_control_path(&encoded),
            verdict,
            "{path:?} as {encoded:?}"
        );
    }
}

fn cookie_pairs(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(|p| p.trim().to_string())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = TextRequest::parse(data);
    let headers = text.header_map();
    let Ok(mut req) = Request::builder()
        .method(text.method)
        .uri(text.target)
        .version(if text.flag("http2") {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        })
        .body(())
    else {
        return;
    };
    *req.headers_mut() = headers.clone();
    let path = req.uri().path().to_string();
    let host: Option<String> = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let host = host.as_deref();
    let id = text.knob_str("id").unwrap_or("abc123");
    let token = text.knob_str("token").unwrap_or("t0k3n");
    let tls = text.flag("tls");
    let trusted = text.flag("trusted");
    let peer: IpAddr = text
        .knob_str("peer")
        .and_then(|p| p.parse().ok())
        .unwrap_or(IpAddr::from([203, 0, 113, 7]));
    let port: u16 = text
        .knob_str("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);

    check_control_path(&path);
    if let Some(raw) = text.target_str() {
        check_control_path(raw);
    }
    check_refusals(&path, id, host, &headers);

    // A private sandbox: the token check comes before forwarding.
    let given_header = headers.get(TOKEN_HEADER).map(|v| v.as_bytes().to_vec());
    match check_traffic_token(&mut req, id, token, tls) {
        Verdict::Pass => {
            if let Some(given) = &given_header {
                assert_eq!(given.as_slice(), token.as_bytes(), "wrong header passed");
            } else {
                let ours = format!("sandbar_traffic_{id}");
                // A pair without `=` is no cookie of that name (browsers
                // read it as a nameless cookie), so it carries nothing of ours.
                for pair in cookie_pairs(req.headers()) {
                    if let Some((name, _)) = pair.split_once('=') {
                        assert_ne!(name.trim(), ours, "our cookie reached the app");
                    }
                }
            }
        }
        Verdict::Redirect(resp) => {
            assert!(given_header.is_none(), "a header token never redirects");
            if let Some(location) = resp.headers().get(LOCATION) {
                let location = location.to_str().expect("Location is visible ASCII");
                let query = location.split_once('?').map_or("", |(_, q)| q);
                for pair in query.split('&') {
                    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                    assert_ne!(key, TOKEN_QUERY, "the token stayed in {location:?}");
                }
            }
            return;
        }
        Verdict::Refuse(r) => {
            if let Some(given) = &given_header {
                assert_ne!(given.as_slice(), token.as_bytes(), "right header refused");
            }
            let _ = body_text(r.response(req.headers(), host));
            return;
        }
    }

    // Forwarding (HTTP/1.1 to the sandbox).
    let upgrade = req.version() <= Version::HTTP_11 && wants_upgrade(req.headers());
    let h = req.headers_mut();
    let named: Vec<HeaderName> = h
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    strip_hop_by_hop(h, upgrade);
    for name in [
        "keep-alive",
        "proxy-connection",
        "trailer",
        "transfer-encoding",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        assert!(!h.contains_key(name), "{name} survived");
    }
    if let Some(te) = h.get("te") {
        assert_eq!(te, "trailers");
    }
    if upgrade {
        assert_eq!(h.get_all("connection").iter().count(), 1);
        assert_eq!(h["connection"], "upgrade");
    } else {
        assert!(!h.contains_key("connection") && !h.contains_key("upgrade"));
    }
    for name in named {
        let kept = (upgrade && name == "upgrade") || name == "connection" || name == "te";
        assert!(
            kept || !h.contains_key(&name),
            "{name} named by Connection survived"
        );
    }

    join_cookies(h);
    assert!(h.get_all(COOKIE).iter().count() <= 1);

    add_forwarded(h, peer, trusted, tls, host);
    let ip = peer.to_canonical().to_string();
    let xff = h["x-forwarded-for"].to_str().expect("XFF is ASCII");
    if trusted {
        assert!(xff == ip || xff.ends_with(&format!(", {ip}")), "{xff:?}");
    } else {
        assert_eq!(xff, ip);
        assert!(!h.contains_key("forwarded"));
    }
    assert_eq!(h["x-forwarded-proto"], if tls { "https" } else { "http" });

    let app_host = match text.knob_str("mask") {
        Some(mask) => Some(mask.replace("${PORT}", &port.to_string())),
        None => host.map(str::to_string),
    };
    if let Some(app_host) = &app_host {
        set_host(h, app_host);
    }
});
