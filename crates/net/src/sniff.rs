//! The name a connection asks for, read from its first bytes: the server
//! name of a TLS ClientHello (SNI) or the host of an HTTP/1 request (its
//! `Host` header, and an absolute-form target, which servers prefer).
//!
//! The bytes are only looked at, never changed: the gateway sends them on
//! as they came once the name is allowed.

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, parse_tls_raw_record, TlsExtension,
    TlsMessage, TlsMessageHandshake, TlsRecordType,
};

/// What the client's first bytes say, so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// More bytes are needed to tell.
    Incomplete,
    /// The names it asks for (TLS: the SNI; HTTP: the Host and an
    /// absolute target's host, which must both be allowed). Empty: it
    /// names none (no SNI, an IP literal).
    Names(Vec<String>),
    /// Neither TLS nor HTTP/1 as far as can be told.
    Other,
}

/// Bytes read before giving up on finding a name: a ClientHello fits in
/// one 16 KiB record, and a request head well within 16 KiB.
pub(crate) const MAX_SNIFF: usize = 16 * 1024 + 5;

pub(crate) fn sniff(buf: &[u8]) -> Sniffed {
    match buf.first() {
        None => Sniffed::Incomplete,
        // A TLS handshake record.
        Some(0x16) => sniff_tls(buf),
        Some(b) if b.is_ascii_uppercase() => sniff_http(buf),
        Some(_) => Sniffed::Other,
    }
}

fn sniff_tls(buf: &[u8]) -> Sniffed {
    // A ClientHello may span several handshake records: join their bodies
    // until the handshake message is whole.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                if record.hdr.record_type != TlsRecordType::Handshake {
                    return Sniffed::Other;
                }
                handshake.extend_from_slice(record.data);
                rest = after;
            }
            Err(tls_parser::Err::Incomplete(_)) => return Sniffed::Incomplete,
            Err(_) => return Sniffed::Other,
        }
        if handshake.len() >= 4 {
            let len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + len {
                break;
            }
        }
        if rest.is_empty() {
            return Sniffed::Incomplete;
        }
    }
    let hello = match parse_tls_message_handshake(&handshake) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) => hello,
        _ => return Sniffed::Other,
    };
    let Some(ext) = hello.ext else {
        return Sniffed::Names(Vec::new());
    };
    let Ok((_, extensions)) = parse_tls_extensions(ext) else {
        return Sniffed::Other;
    };
    let names = extensions
        .iter()
        .find_map(|e| match e {
            TlsExtension::SNI(list) => Some(
                list.iter()
                    // host_name(0) is the only type defined.
                    .filter(|(kind, _)| kind.0 == 0)
                    .filter_map(|(_, name)| std::str::from_utf8(name).ok())
                    .filter_map(crate::names::normalize)
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    Sniffed::Names(names)
}

fn sniff_http(buf: &[u8]) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => return Sniffed::Incomplete,
        Ok(httparse::Status::Complete(_)) => {}
        Err(_) => return Sniffed::Other,
    }
    let mut names = Vec::new();
    let mut push = |host: &str| {
        if let Some(name) = crate::names::normalize(strip_port(host)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    };
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("host") {
            if let Ok(host) = std::str::from_utf8(header.value) {
                push(host.trim());
            }
        }
    }
    if let Some(target) = request.path {
        if let Some((_, rest)) = target.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            push(host);
        }
    }
    Sniffed::Names(names)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal names no host we check.
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello naming `name` (or no SNI).
    pub(crate) fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = name {
            let n = name.as_bytes();
            let list_len = 3 + n.len();
            ext.extend_from_slice(&[0x00, 0x00]); // server_name
            ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list_len as u16).to_be_bytes());
            ext.push(0); // host_name
            ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
            ext.extend_from_slice(n);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        record
    }

    #[test]
    fn tls_server_name() {
        let hello = client_hello(Some("Api.Example.com"));
        assert_eq!(
            sniff(&hello),
            Sniffed::Names(vec!["api.example.com".into()])
        );
        assert_eq!(sniff(&hello[..hello.len() - 3]), Sniffed::Incomplete);
        assert_eq!(sniff(&hello[..3]), Sniffed::Incomplete);
        assert_eq!(sniff(&client_hello(None)), Sniffed::Names(Vec::new()));
        assert_eq!(
            sniff(&client_hello(Some("192.0.2.1"))),
            Sniffed::Names(Vec::new())
        );
    }

    #[test]
    fn a_client_hello_split_over_two_records() {
        let hello = client_hello(Some("split.test"));
        let hs = &hello[5..];
        let (a, b) = hs.split_at(20);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(sniff(&two[..30]), Sniffed::Incomplete);
        assert_eq!(sniff(&two), Sniffed::Names(vec!["split.test".into()]));
    }

    #[test]
    fn http_host_and_absolute_targets() {
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: Allowed.test:8080\r\n\r\n"),
            Sniffed::Names(vec!["allowed.test".into()])
        );
        assert_eq!(
            sniff(b"GET http://denied.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
            Sniffed::Names(vec!["allowed.test".into(), "denied.test".into()])
        );
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n"),
            Sniffed::Names(vec![])
        );
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: a"), Sniffed::Incomplete);
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), Sniffed::Other);
        assert_eq!(sniff(&[0x00, 0x01]), Sniffed::Other);
    }
}
