//! The answers the proxy gives itself instead of the sandbox's: the E2B
//! error bodies (JSON; an HTML page with the same facts for a browser).

use http::header::{ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{full, ProxyBody};
use crate::target::TargetError;
use crate::traffic_token::{TOKEN_HEADER, TOKEN_QUERY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SandboxNotFound {
        id: String,
    },
    /// Paused, and not to be woken by traffic.
    Paused {
        id: String,
    },
    PortClosed {
        id: String,
        port: u16,
    },
    TokenMissing {
        id: String,
    },
    TokenInvalid {
        id: String,
    },
    /// An envd route only the control plane may call.
    ControlRoute {
        path: String,
    },
    BadTarget(TargetError),
    /// The sandbox's server broke off or answered nonsense.
    Upstream {
        id: String,
        port: u16,
        detail: String,
    },
    NoApi,
    /// `CONNECT`: the proxy is no forward proxy.
    Connect,
}

/// Field order is the E2B one: `sandboxId`, `message`, `port`, `code`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Facts<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox_id: Option<&'a str>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    code: u16,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SandboxNotFound { .. }
            | Self::Paused { .. }
            | Self::PortClosed { .. }
            | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::TokenMissing { .. } | Self::TokenInvalid { .. } => StatusCode::FORBIDDEN,
            Self::ControlRoute { .. } | Self::NoApi => StatusCode::NOT_FOUND,
            Self::BadTarget(_) => StatusCode::BAD_REQUEST,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::SandboxNotFound { .. } => "Sandbox not found",
            Self::Paused { .. } => "Sandbox paused",
            Self::PortClosed { .. } => "Closed port",
            Self::TokenMissing { .. } | Self::TokenInvalid { .. } => {
                "Traffic access token required"
            }
            Self::ControlRoute { .. } => "Not reachable",
            Self::BadTarget(_) => "Bad request",
            Self::Upstream { .. } => "Bad gateway",
            Self::NoApi => "Not found",
            Self::Connect => "Method not allowed",
        }
    }

    fn facts(&self) -> Facts<'_> {
        let code = self.status().as_u16();
        let (sandbox_id, port, path) = match self {
            Self::SandboxNotFound { id }
            | Self::Paused { id }
            | Self::TokenMissing { id }
            | Self::TokenInvalid { id } => (Some(id.as_str()), None, None),
            Self::PortClosed { id, port } | Self::Upstream { id, port, .. } => {
                (Some(id.as_str()), Some(*port), None)
            }
            Self::ControlRoute { path } => (None, None, Some(path.as_str())),
            Self::BadTarget(_) | Self::NoApi | Self::Connect => (None, None, None),
        };
        let message = match self {
            Self::SandboxNotFound { .. } => "The sandbox was not found".to_string(),
            Self::Paused { .. } => {
                "The sandbox is paused; resume it (Sandbox.connect) to reach it".to_string()
            }
            Self::PortClosed { .. } => "The sandbox is running but port is not open".to_string(),
            Self::TokenMissing { .. } => format!(
                "Sandbox is secured with traffic access token. Token header '{TOKEN_HEADER}' is missing"
            ),
            Self::TokenInvalid { .. } => format!(
                "Sandbox is secured with traffic access token. Provided token in header '{TOKEN_HEADER}' is invalid"
            ),
            Self::ControlRoute { .. } => {
                "This endpoint is reserved for the control plane and is not reachable through the sandbox URL"
                    .to_string()
            }
            Self::BadTarget(e) => e.to_string(),
            Self::Upstream { detail, .. } => {
                format!("The server in the sandbox did not answer properly: {detail}")
            }
            Self::NoApi => "The control-plane API is not served at this address".to_string(),
            Self::Connect => "CONNECT is not supported: this is not a forward proxy".to_string(),
        };
        Facts {
            sandbox_id,
            message,
            port,
            path,
            code,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(&self.facts()).expect("plain struct serializes")
    }

    fn html(&self, host: Option<&str>) -> String {
        let facts = self.facts();
        let mut rows = String::new();
        let mut row = |k: &str, v: &str| {
            rows.push_str(&format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>\n",
                k,
                escape(v)
            ));
        };
        if let Some(host) = host {
            row("Host", host);
        }
        if let Some(id) = facts.sandbox_id {
            row("Sandbox", id);
        }
        if let Some(port) = facts.port {
            row("Port", &port.to_string());
        }
        if let Some(path) = facts.path {
            row("Path", path);
        }
        row("Status", &facts.code.to_string());
        let hint = match self {
            Self::TokenMissing { .. } | Self::TokenInvalid { .. } => format!(
                "<p>In a browser, open this address once with <code>?{TOKEN_QUERY}=&lt;token&gt;</code>; \
the proxy then keeps the token in a cookie for this host.</p>\n"
            ),
            _ => String::new(),
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.3rem;color:#b42318}}th{{text-align:left;padding-right:1rem;color:#555}}</style></head>\n\
<body><h1>{title}</h1>\n<p id=\"message\">{message}</p>\n{hint}<table>\n{rows}</table></body></html>\n",
            title = self.title(),
            message = escape(&facts.message),
        )
    }

    /// The response: HTML when the client navigates like a browser, else JSON.
    pub fn response(&self, request_headers: &HeaderMap, host: Option<&str>) -> Response<ProxyBody> {
        self.response_as(wants_html(request_headers), host)
    }

    /// The response, HTML or JSON as decided by the caller.
    pub fn response_as(&self, html: bool, host: Option<&str>) -> Response<ProxyBody> {
        let (content_type, body) = if html {
            ("text/html; charset=utf-8", self.html(host))
        } else {
            ("application/json", self.json())
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Browser SDK code reads these bodies from other origins.
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        resp
    }
}

/// A browser navigating sends `Accept: text/html,...`; fetch() and the SDKs
/// do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_the_e2b_texts_and_key_order() {
        let id = || "abc".to_string();
        assert_eq!(
            Refusal::SandboxNotFound { id: id() }.json(),
            r#"{"sandboxId":"abc","message":"The sandbox was not found","code":502}"#
        );
        assert_eq!(
            Refusal::PortClosed {
                id: id(),
                port: 3000
            }
            .json(),
            r#"{"sandboxId":"abc","message":"The sandbox is running but port is not open","port":3000,"code":502}"#
        );
        assert_eq!(
            Refusal::TokenMissing { id: id() }.json(),
            r#"{"sandboxId":"abc","message":"Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing","code":403}"#
        );
        assert_eq!(
            Refusal::TokenInvalid { id: id() }.json(),
            r#"{"sandboxId":"abc","message":"Sandbox is secured with traffic access token. Provided token in header 'e2b-traffic-access-token' is invalid","code":403}"#
        );
        assert_eq!(
            Refusal::ControlRoute {
                path: "/init".into()
            }
            .status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn browsers_get_an_escaped_page_with_the_same_facts() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            "text/html,application/xhtml+xml;q=0.9".parse().unwrap(),
        );
        let r = Refusal::PortClosed {
            id: "abc".into(),
            port: 8080,
        };
        let page = r.html(Some("<x>"));
        assert!(page.contains("The sandbox is running but port is not open"));
        assert!(page.contains("8080") && page.contains("abc") && page.contains("&lt;x&gt;"));
        let resp = r.response(&h, None);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            r.response(&HeaderMap::new(), None).headers()[CONTENT_TYPE],
            "application/json"
        );
    }
}
