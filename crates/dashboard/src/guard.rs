//! Cross-site request forgery. The session cookie is `SameSite=Strict`, but
//! a sandbox's page (`{port}-{id}.{domain}`, untrusted code) is the *same
//! site* as the dashboard on `{domain}`, so SameSite alone does not keep it
//! out. What does: browsers say who is asking (`Origin`, `Sec-Fetch-Site`),
//! and the dashboard's routes answer only its own origin.

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, Method, Uri};

use crate::error::DashboardError;

/// Whether `method` changes anything (those must carry a matching Origin).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a request that a browser sent from another origin, and a
/// state-changing one that does not say where it comes from (every browser
/// sends `Origin` on those).
pub fn same_origin(headers: &HeaderMap, uri: &Uri, method: &Method) -> Result<(), DashboardError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        let site = site.trim().to_ascii_lowercase();
        if site == "cross-site" || site == "same-site" {
            return Err(DashboardError::CrossOrigin(format!(
                "Sec-Fetch-Site: {site}"
            )));
        }
    }
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    match headers.get(ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        Some(origin) => {
            let ok = host.as_deref().is_some_and(|h| origin_matches(origin, h));
            if ok {
                Ok(())
            } else {
                Err(DashboardError::CrossOrigin(format!("Origin {origin}")))
            }
        }
        None if changes_state(method) => {
            Err(DashboardError::CrossOrigin("no Origin header".into()))
        }
        None => Ok(()),
    }
}

/// `https://a.b:8443` against Host `a.b:8443`; a default port may be left
/// out on either side.
fn origin_matches(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" (sandboxed frames, file:) among others
    };
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let norm = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        s.strip_suffix(default).map(str::to_owned).unwrap_or(s)
    };
    !authority.contains('/') && norm(authority) == norm(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], method: Method) -> Result<(), DashboardError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        same_origin(&h, &Uri::from_static("/api/x"), &method)
    }

    #[test]
    fn only_the_dashboards_own_origin_passes() {
        let host = ("host", "sbx.example:8443");
        assert!(check(
            &[host, ("origin", "https://sbx.example:8443")],
            Method::POST
        )
        .is_ok());
        assert!(check(
            &[("host", "sbx.example"), ("origin", "https://sbx.example")],
            Method::POST
        )
        .is_ok());
        assert!(check(
            &[
                ("host", "sbx.example:443"),
                ("origin", "https://sbx.example")
            ],
            Method::POST
        )
        .is_ok());
        // A sandbox's page: same site, another origin.
        assert!(check(
            &[host, ("origin", "https://3000-abc.sbx.example:8443")],
            Method::POST
        )
        .is_err());
        assert!(check(
            &[host, ("origin", "https://3000-abc.sbx.example:8443")],
            Method::GET
        )
        .is_err());
        assert!(check(&[host, ("origin", "null")], Method::POST).is_err());
        assert!(check(
            &[
                host,
                ("origin", "https://sbx.example:8443"),
                ("sec-fetch-site", "same-site")
            ],
            Method::POST
        )
        .is_err());
        assert!(check(&[host, ("sec-fetch-site", "cross-site")], Method::GET).is_err());
        // No Origin: fine for reads (navigations, old clients), not for changes.
        assert!(check(&[host], Method::GET).is_ok());
        assert!(check(&[host, ("sec-fetch-site", "same-origin")], Method::GET).is_ok());
        assert!(check(&[host], Method::DELETE).is_err());
    }
}
