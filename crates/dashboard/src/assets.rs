//! The embedded front-end (see `build.rs`) and how it is served.

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LOCATION, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, StatusCode};

use crate::error::DashboardError;

pub(crate) struct Asset {
    /// Relative to the front-end's root, without a leading `/`.
    pub path: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Whether this binary holds the real front-end (else the "not built" page).
pub fn built() -> bool {
    BUILT
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn mime(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The page's policy: its own scripts only, API calls to itself, and envd
/// (terminal, files) at the sandbox hosts `*.{domain}`.
fn csp(public_domain: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; font-src 'self'; \
         connect-src 'self' https://*.{public_domain}; \
         frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
    )
}

pub(crate) async fn serve(public_domain: &str, original: OriginalUri, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return DashboardError::MethodNotAllowed.into_response();
    }
    let path = req.uri().path();
    // Mounted under a prefix (`/dashboard`), the page's relative URLs need
    // the trailing slash: `/dashboard` -> `/dashboard/`.
    let OriginalUri(orig) = original;
    if path == "/" && !orig.path().ends_with('/') {
        let mut to = format!("{}/", orig.path());
        if let Some(q) = orig.query() {
            to.push('?');
            to.push_str(q);
        }
        return (StatusCode::PERMANENT_REDIRECT, [(LOCATION, to)]).into_response();
    }
    let rel = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let Some(asset) = find(rel) else {
        return DashboardError::NotFound.into_response();
    };

    let mut resp = Response::builder()
        .header(CONTENT_TYPE, mime(asset.path))
        .header(ETAG, asset.etag)
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(VARY, "accept-encoding");
    // Vite names what it emits under assets/ by content hash.
    resp = if asset.path.starts_with("assets/") {
        resp.header(CACHE_CONTROL, "public, max-age=31536000, immutable")
    } else {
        resp.header(CACHE_CONTROL, "no-cache")
    };
    if asset.path.ends_with(".html") {
        resp = resp
            .header(CONTENT_SECURITY_POLICY, csp(public_domain))
            .header(X_FRAME_OPTIONS, "DENY")
            .header(REFERRER_POLICY, "no-referrer");
    }

    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if fresh {
        return resp
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("static headers are valid");
    }
    let gzip_ok = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let body = match (asset.gzip, gzip_ok) {
        (Some(gz), true) => {
            resp = resp.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz
        }
        _ => asset.body,
    };
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    resp.body(body).expect("static headers are valid")
}

/// `gzip` listed in Accept-Encoding without `q=0`.
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("br"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(accepts_gzip("*"));
    }

    #[test]
    fn an_index_page_is_embedded_either_way() {
        let index = find("index.html").expect("index.html is embedded");
        assert!(std::str::from_utf8(index.body).unwrap().contains("<html"));
        assert_eq!(
            mime("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
