//! Header rewriting between client and sandbox: hop-by-hop fields (RFC 9110
//! section 7.6.1) and the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{
    HeaderName, CONNECTION, COOKIE, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether an HTTP/1.1 request asks to switch protocols (WebSocket etc.).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the fields that belong to one connection only. With
/// `keep_upgrade` the `Upgrade` field and `Connection: upgrade` stay, since
/// the switch has to be negotiated end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // `TE: trailers` is end to end in practice (gRPC relies on it).
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in [
        &CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Tells the app who asked and how: the client's address in
/// `X-Forwarded-For`, the scheme and the Host the client used. What the
/// client itself sent in `X-Forwarded-For` (and `Forwarded`) is kept, with
/// our peer's address appended, only when that peer is a proxy the operator
/// trusts (`client_trusted`); from anyone else it would be a forgery that
/// the app reads as the true origin.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    client_trusted: bool,
    tls: bool,
    host: Option<&str>,
) {
    let ip = client.to_canonical().to_string();
    let prior = client_trusted
        .then(|| {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|p| !p.is_empty());
    let xff = match prior {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if !client_trusted {
        headers.remove(&FORWARDED);
    }
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    match host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(v) => headers.insert(X_FORWARDED_HOST.clone(), v),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Sets the Host the app sees.
pub fn set_host(headers: &mut HeaderMap, host: &str) {
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HOST, v);
    }
}

/// HTTP/2 sends each cookie as its own field; an HTTP/1.1 server expects one
/// `Cookie` line (RFC 9113 section 8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    headers.remove(COOKIE);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_go_including_those_connection_names() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);

        let mut h = map(&[("te", "trailers"), ("connection", "close")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn upgrades_keep_their_negotiation() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_for_is_appended_only_behind_a_trusted_proxy() {
        let sent = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "ftp"),
            ("forwarded", "for=6.6.6.6"),
        ];
        let client = "::ffff:127.0.0.1".parse().unwrap();
        let mut h = map(&sent);
        add_forwarded(&mut h, client, true, true, Some("3000-a.d"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(h["forwarded"], "for=6.6.6.6");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "3000-a.d");
        // From a client that is no trusted proxy: its claims are dropped.
        let mut h = map(&sent);
        add_forwarded(&mut h, client, false, true, Some("3000-a.d"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert!(h.get("forwarded").is_none());
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn cookies_are_joined_for_http1() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }
}
