//! Feeds a request head (see `sandbar_fuzz::TextRequest`): its Host value
//! (the header, else the URI's authority, as the proxy takes it) and its
//! `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers, to
//! `sandbar_proxy::target::Hosts::resolve`, the routing decision of every
//! request.
//!
//! Beyond "no panic": a sandbox target has a port in 1..=65535 and an id of
//! `[a-z0-9]+` (the proxy builds paths and names from it); a host-routed
//! target comes from a `{port}-{id}[-…].{domain}` host and routes the same
//! when written back in canonical form; `api.{domain}` is the only way to
//! the control plane and the bare `{domain}` the only way to the dashboard.

#![no_main]

use http::header::HOST;
use http::{HeaderMap, Uri};
use libfuzzer_sys::fuzz_target;
use sandbar_fuzz::TextRequest;
use sandbar_proxy::target::{hostname, Hosts, Target, TargetError};

fuzz_target!(|data: &[u8]| {
    // `GET <uri>` + headers; `X-Fuzz-Domain` sets the proxy's domain.
    let req = TextRequest::parse(data);
    // An operator's domain is a DNS name.
    let domain = req.knob_str("domain").filter(|d| {
        d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    });
    let hosts = Hosts::new(domain.unwrap_or("sbx.example"));
    let headers: HeaderMap = req.header_map();
    let uri: Option<Uri> = req.target_str().and_then(|t| t.parse().ok());
    // As the proxy takes it: the Host header, else an HTTP/2 authority.
    let host: Option<String> = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            uri.as_ref()
                .and_then(|u| u.authority())
                .map(|a| a.to_string())
        });
    let host = host.as_deref();

    if let Some(host) = host {
        // Always a part of what it was given.
        let name = hostname(host);
        assert!(host.contains(name), "{host:?} -> {name:?}");
    }

    let result = hosts.resolve(host, &headers);
    let name = host.map(|h| {
        hostname(h)
            .to_ascii_lowercase()
            .trim_end_matches('.')
            .to_string()
    });
    match &result {
        Ok(Target::Api) => {
            assert_eq!(
                name.as_deref(),
                Some(format!("api.{}", hosts.domain()).as_str())
            );
        }
        Ok(Target::Dashboard) => {
            assert_eq!(name.as_deref(), Some(hosts.domain()));
        }
        Ok(Target::Sandbox { id, port }) => {
            assert_ne!(*port, 0, "port 0 routed");
            assert!(
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "bad id {id:?}"
            );
            let name = name.expect("a target without a host");
            let dot_domain = format!(".{}", hosts.domain());
            if let Some(label) = name.strip_suffix(&dot_domain) {
                if !label.contains('.') && name != format!("sandbox.{}", hosts.domain()) {
                    // Routed by the host: the label is `{port}-{id}[-client]`.
                    let (p, rest) = label.split_once('-').expect("label without '-'");
                    assert_eq!(p.parse::<u16>().ok(), Some(*port), "{label:?}");
                    assert!(
                        rest == id || rest.starts_with(&format!("{id}-")),
                        "{label:?}"
                    );
                    let canonical = format!("{port}-{id}.{}", hosts.domain());
                    assert_eq!(
                        hosts.resolve(Some(&canonical), &HeaderMap::new()),
                        result,
                        "{canonical}"
                    );
                }
            }
        }
        Err(TargetError::MissingHost) => assert!(host.is_none()),
        Err(_) => {}
    }
});
