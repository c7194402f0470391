//! Private sandboxes (`allowPublicTraffic: false`): the
//! `e2b-traffic-access-token` header, and for browsers, which cannot set
//! headers when navigating, a query parameter that is traded once for a
//! host-only cookie.

use base64::Engine;
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::{empty, ProxyBody};
use crate::refusal::Refusal;

pub const TOKEN_HEADER: &str = "e2b-traffic-access-token";
pub const TOKEN_QUERY: &str = "e2b_traffic_access_token";

#[derive(Debug)]
pub enum Verdict {
    Pass,
    /// The query parameter was right: set the cookie and reload without it.
    Redirect(Response<ProxyBody>),
    Refuse(Refusal),
}

/// Checks a request to a private sandbox. On success the proxy's own cookie
/// is taken out of the request, so the app never sees it.
pub fn check<B>(req: &mut Request<B>, id: &str, expected: &str, tls: bool) -> Verdict {
    if let Some(given) = req.headers().get(TOKEN_HEADER) {
        return if ct_eq(given.as_bytes(), expected.as_bytes()) {
            Verdict::Pass
        } else {
            Verdict::Refuse(Refusal::TokenInvalid { id: id.into() })
        };
    }

    if let Some((given, rest)) = take_query_param(req.uri().query(), TOKEN_QUERY) {
        if !ct_eq(given.as_bytes(), expected.as_bytes()) {
            return Verdict::Refuse(Refusal::TokenInvalid { id: id.into() });
        }
        return Verdict::Redirect(redirect(req, id, expected, &rest, tls));
    }

    let name = cookie_name(id);
    let want = cookie_value(id, expected);
    let mut found = None;
    let kept: Vec<&str> = cookie_pairs(req.headers())
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k.trim() == name => {
                // A right cookie wins over stale ones of the same name.
                if found != Some(true) {
                    found = Some(ct_eq(v.trim().as_bytes(), want.as_bytes()));
                }
                false
            }
            _ => true,
        })
        .collect();
    match found {
        Some(true) => {
            let joined = kept.join("; ");
            let headers = req.headers_mut();
            headers.remove(COOKIE);
            if !joined.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&joined) {
                    headers.insert(COOKIE, v);
                }
            }
            Verdict::Pass
        }
        Some(false) => Verdict::Refuse(Refusal::TokenInvalid { id: id.into() }),
        None => Verdict::Refuse(Refusal::TokenMissing { id: id.into() }),
    }
}

/// Named per sandbox: header-routed hosts (`localhost`) serve many sandboxes.
fn cookie_name(id: &str) -> String {
    format!("sandbar_traffic_{id}")
}

/// A digest, not the token itself: a leaked cookie cannot be replayed as
/// the header token elsewhere (e.g. against the SDK's envd client).
fn cookie_value(id: &str, token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sandbar traffic cookie\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// `s` with every byte outside visible ASCII percent-encoded: the request's
/// raw bytes (a path or query may carry UTF-8 or spaces) are not echoed
/// into the Location header, which is ASCII (found by fuzzing).
fn visible_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn redirect<B>(
    req: &Request<B>,
    id: &str,
    token: &str,
    rest_query: &str,
    tls: bool,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    let location = visible_ascii(&if rest_query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest_query}")
    });
    // Without TLS a Secure cookie would be dropped by the browser; the plain
    // listener is for loopback and deployments that terminate TLS in front.
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
        cookie_name(id),
        cookie_value(id, token)
    );
    let status = if req.method() == Method::GET || req.method() == Method::HEAD {
        StatusCode::FOUND
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(SET_COOKIE, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// The decoded value of `name` and the query without it (still encoded).
fn take_query_param(query: Option<&str>, name: &str) -> Option<(String, String)> {
    let query = query?;
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            value.get_or_insert_with(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            });
        } else {
            rest.push(pair);
        }
    }
    value.map(|v| (v, rest.join("&")))
}

/// HTTP/2 clients send one `cookie` field per cookie; HTTP/1 ones join them.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Equality whose time does not depend on where the inputs differ. Written
/// out because it is five lines and the workspace has no `subtle`.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn refused(v: Verdict) -> Refusal {
        match v {
            Verdict::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn header_token_must_match() {
        assert!(matches!(
            check(&mut req("/", &[(TOKEN_HEADER, "t0k")]), "a", "t0k", true),
            Verdict::Pass
        ));
        assert_eq!(
            refused(check(
                &mut req("/", &[(TOKEN_HEADER, "nope")]),
                "a",
                "t0k",
                true
            )),
            Refusal::TokenInvalid { id: "a".into() }
        );
        assert_eq!(
            refused(check(&mut req("/", &[]), "a", "t0k", true)),
            Refusal::TokenMissing { id: "a".into() }
        );
    }

    #[test]
    fn query_parameter_becomes_a_cookie_and_a_clean_url() {
        let mut r = req("/p/q?x=1&e2b_traffic_access_token=t%30k&y=2", &[]);
        let Verdict::Redirect(resp) = check(&mut r, "a", "t0k", true) else {
            panic!("expected a redirect")
        };
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[LOCATION], "/p/q?x=1&y=2");
        let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("Path=/")
        );
        assert!(
            !cookie.contains("t0k"),
            "the token itself must not be the cookie"
        );

        let pair = cookie.split(';').next().unwrap();
        let mut next = req("/p/q?x=1&y=2", &[("cookie", "other=1"), ("cookie", pair)]);
        assert!(matches!(check(&mut next, "a", "t0k", true), Verdict::Pass));
        assert_eq!(
            next.headers()[COOKIE],
            "other=1",
            "our cookie must not reach the app"
        );

        // The cookie of one sandbox opens no other.
        let mut other = req("/", &[("cookie", pair)]);
        assert!(matches!(
            check(&mut other, "b", "t0k", true),
            Verdict::Refuse(_)
        ));

        let mut bad = req("/?e2b_traffic_access_token=wrong", &[]);
        assert!(matches!(
            check(&mut bad, "a", "t0k", true),
            Verdict::Refuse(Refusal::TokenInvalid { .. })
        ));
    }

    #[test]
    fn plain_http_cookie_is_not_secure_and_posts_keep_their_method() {
        let mut r = Request::builder()
            .method(Method::POST)
            .uri("/?e2b_traffic_access_token=t")
            .body(())
            .unwrap();
        let Verdict::Redirect(resp) = check(&mut r, "a", "t", false) else {
            panic!("expected a redirect")
        };
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(resp.headers()[LOCATION], "/");
        assert!(!resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn a_location_carries_visible_ascii_only() {
        assert_eq!(visible_ascii("/p/q?x=1&y=2"), "/p/q?x=1&y=2");
        assert_eq!(
            visible_ascii("/p/[q?x=cop\u{3de}&a b"),
            "/p/[q?x=cop%CF%9E&a%20b"
        );
    }
}
