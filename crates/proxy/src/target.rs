//! Where a request goes, from its Host (or, on shared hosts, its
//! `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers).

use std::net::IpAddr;

use http::HeaderMap;

pub const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
pub const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A port inside a sandbox.
    Sandbox { id: String, port: u16 },
    /// `api.{domain}`: the control plane.
    Api,
    /// The bare `{domain}`: the web dashboard.
    Dashboard,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("Missing Host header")]
    MissingHost,
    #[error("Invalid host '{0}': expected '<port>-<sandboxId>.{1}'")]
    BadHost(String, String),
    #[error("Missing header: {0}")]
    MissingHeader(&'static str),
    #[error("Invalid sandbox port '{0}'")]
    BadPort(String),
    #[error("Invalid sandbox ID '{0}'")]
    BadSandboxId(String),
}

/// The Host names that decide routing for one domain, computed once.
#[derive(Debug, Clone)]
pub struct Hosts {
    domain: String,
    dot_domain: String,
    api: String,
    shared: String,
}

impl Hosts {
    /// `domain` without a port, e.g. `sandbar.localhost`.
    pub fn new(domain: &str) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        Self {
            dot_domain: format!(".{domain}"),
            api: format!("api.{domain}"),
            shared: format!("sandbox.{domain}"),
            domain,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Decides the target of a request whose Host (header, or the authority
    /// of an HTTP/2 request) is `host`.
    pub fn resolve(&self, host: Option<&str>, headers: &HeaderMap) -> Result<Target, TargetError> {
        let host = host.ok_or(TargetError::MissingHost)?;
        let name = hostname(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');

        if name == self.api {
            return Ok(Target::Api);
        }
        if name == self.domain {
            return Ok(Target::Dashboard);
        }
        if name == "localhost" || name == self.shared || name.parse::<IpAddr>().is_ok() {
            return from_headers(headers);
        }
        let Some(label) = name.strip_suffix(&self.dot_domain) else {
            return Err(self.bad_host(host));
        };
        if label.contains('.') {
            return Err(self.bad_host(host));
        }
        // `{port}-{id}`, or the old `{port}-{id}-{clientId}`.
        let mut parts = label.split('-');
        let (Some(port), Some(id)) = (parts.next(), parts.next()) else {
            return Err(self.bad_host(host));
        };
        Ok(Target::Sandbox {
            port: parse_port(port)?,
            id: checked_id(id)?,
        })
    }

    fn bad_host(&self, host: &str) -> TargetError {
        TargetError::BadHost(host.to_string(), self.domain.clone())
    }
}

fn from_headers(headers: &HeaderMap) -> Result<Target, TargetError> {
    let get = |name: &'static str, shown: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(TargetError::MissingHeader(shown))
    };
    let id = get(SANDBOX_ID_HEADER, "E2b-Sandbox-Id")?;
    let port = get(SANDBOX_PORT_HEADER, "E2b-Sandbox-Port")?;
    Ok(Target::Sandbox {
        port: parse_port(port)?,
        id: checked_id(id)?,
    })
}

fn parse_port(s: &str) -> Result<u16, TargetError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(TargetError::BadPort(s.to_string())),
    }
}

fn checked_id(id: &str) -> Result<String, TargetError> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(id.to_string())
    } else {
        Err(TargetError::BadSandboxId(id.to_string()))
    }
}

/// The host part of a Host value: `[::1]:80` -> `::1`, `a.b:443` -> `a.b`.
pub fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts::new("sbx.example")
    }

    fn sandbox(id: &str, port: u16) -> Result<Target, TargetError> {
        Ok(Target::Sandbox {
            id: id.into(),
            port,
        })
    }

    #[test]
    fn port_and_id_from_the_left_label() {
        let h = HeaderMap::new();
        let r = |host| hosts().resolve(Some(host), &h);
        assert_eq!(r("3000-abc123.sbx.example"), sandbox("abc123", 3000));
        assert_eq!(r("3000-abc123.sbx.example:8443"), sandbox("abc123", 3000));
        assert_eq!(
            r("3000-abc123-client9.SBX.example"),
            sandbox("abc123", 3000)
        );
        assert_eq!(r("49983-abc.sbx.example."), sandbox("abc", 49983));
        assert_eq!(r("api.sbx.example:443"), Ok(Target::Api));
        assert_eq!(r("sbx.example"), Ok(Target::Dashboard));
        assert_eq!(r("SBX.example.:8443"), Ok(Target::Dashboard));
    }

    #[test]
    fn bad_hosts_are_refused_with_a_reason() {
        let h = HeaderMap::new();
        let r = |host| hosts().resolve(Some(host), &h);
        assert!(matches!(r("xsbx.example"), Err(TargetError::BadHost(..))));
        assert!(matches!(
            r("3000-abc.other.example"),
            Err(TargetError::BadHost(..))
        ));
        assert!(matches!(
            r("x.3000-abc.sbx.example"),
            Err(TargetError::BadHost(..))
        ));
        assert!(matches!(
            r("abc.sbx.example"),
            Err(TargetError::BadHost(..))
        ));
        assert_eq!(
            r("http-abc.sbx.example"),
            Err(TargetError::BadPort("http".into()))
        );
        assert_eq!(
            r("70000-abc.sbx.example"),
            Err(TargetError::BadPort("70000".into()))
        );
        assert_eq!(
            r("3000-a_b.sbx.example"),
            Err(TargetError::BadSandboxId("a_b".into()))
        );
        assert_eq!(
            r("3000-.sbx.example"),
            Err(TargetError::BadSandboxId("".into()))
        );
        assert_eq!(hosts().resolve(None, &h), Err(TargetError::MissingHost));
    }

    #[test]
    fn shared_hosts_route_by_headers() {
        let mut h = HeaderMap::new();
        h.insert("E2b-Sandbox-Id", "abc".parse().unwrap());
        h.insert("E2b-Sandbox-Port", "49983".parse().unwrap());
        for host in [
            "localhost",
            "localhost:3000",
            "127.0.0.1:80",
            "[::1]:80",
            "::1",
            "10.1.2.3",
            "sandbox.sbx.example",
        ] {
            assert_eq!(
                hosts().resolve(Some(host), &h),
                sandbox("abc", 49983),
                "{host}"
            );
        }
        h.remove("E2b-Sandbox-Port");
        assert_eq!(
            hosts().resolve(Some("localhost"), &h),
            Err(TargetError::MissingHeader("E2b-Sandbox-Port"))
        );
        // Headers do not override a sandbox host.
        h.insert("E2b-Sandbox-Port", "1".parse().unwrap());
        assert_eq!(
            hosts().resolve(Some("80-xyz.sbx.example"), &h),
            sandbox("xyz", 80)
        );
    }
}
