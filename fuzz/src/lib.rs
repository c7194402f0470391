//! What the fuzz targets share: their inputs are HTTP/1-like text, so that
//! seeds can be written by hand and libFuzzer's mutations stay close to
//! real requests.
//!
//! ```text
//! POST /path?query HTTP/1.1      <- method and target (version optional)
//! Name: value                    <- headers, raw bytes, repeated as sent
//! X-Fuzz-Knob: value             <- harness settings, taken out (see `knob`)
//!                                <- empty line
//! body bytes...
//! ```
//!
//! Lines end with `\n` or `\r\n`. Input without an empty line has no body.

/// A request as the input spells it.
#[derive(Debug, Default)]
pub struct TextRequest<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// Header lines without the harness's `x-fuzz-*` ones.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    knobs: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

impl<'a> TextRequest<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let (head, body) = match find(data, b"\n\r\n")
            .map(|i| (i, 3))
            .or_else(|| find(data, b"\n\n").map(|i| (i, 2)))
        {
            Some((i, skip)) => (&data[..i], &data[i + skip..]),
            None => (data, &data[data.len()..]),
        };
        let mut lines = head.split(|&b| b == b'\n').map(trim);
        let first = lines.next().unwrap_or_default();
        let mut words = first.splitn(3, |&b| b == b' ');
        let mut req = TextRequest {
            method: words.next().unwrap_or_default(),
            target: words.next().unwrap_or_default(),
            body,
            ..Default::default()
        };
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = trim(&line[..colon]);
            let value = trim(&line[colon + 1..]);
            if name.len() > 7 && name[..7].eq_ignore_ascii_case(b"x-fuzz-") {
                req.knobs.push((name, value));
            } else {
                req.headers.push((name, value));
            }
        }
        req
    }

    /// The first `X-Fuzz-<name>` header's value.
    pub fn knob(&self, name: &str) -> Option<&'a [u8]> {
        self.knobs
            .iter()
            .find(|(k, _)| k[7..].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    }

    /// Every `X-Fuzz-<name>` header's value, in order.
    pub fn knobs(&self, name: &str) -> Vec<&'a [u8]> {
        self.knobs
            .iter()
            .filter(|(k, _)| k[7..].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
            .collect()
    }

    pub fn knob_str(&self, name: &str) -> Option<&'a str> {
        self.knob(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A knob that is set to anything but `0`/`false`/`no`.
    pub fn flag(&self, name: &str) -> bool {
        self.knob(name)
            .is_some_and(|v| !matches!(v, b"0" | b"false" | b"no"))
    }

    pub fn method_str(&self) -> &'a str {
        std::str::from_utf8(self.method).unwrap_or("")
    }

    pub fn target_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.target).ok()
    }

    /// The headers that `http` accepts, in order.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// The body cut into `X-Fuzz-Chunk`-byte pieces (whole when unset).
    pub fn body_chunks(&self) -> Vec<bytes::Bytes> {
        chunked(
            self.body,
            self.knob_str("chunk").and_then(|c| c.parse().ok()),
        )
    }
}

/// `data` in pieces of `size` bytes (one piece when None or 0).
pub fn chunked(data: &[u8], size: Option<usize>) -> Vec<bytes::Bytes> {
    match size {
        Some(n) if n > 0 => data.chunks(n).map(bytes::Bytes::copy_from_slice).collect(),
        _ => vec![bytes::Bytes::copy_from_slice(data)],
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A current-thread tokio runtime per target process (envd and the tests
/// serve on such runtimes too).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_knobs_and_body() {
        let r = TextRequest::parse(
            b"POST /a?b HTTP/1.1\r\nHost: x\r\nX-Fuzz-Chunk: 2\r\nA:  b \r\n\r\nbody",
        );
        assert_eq!(r.method, b"POST");
        assert_eq!(r.target, b"/a?b");
        assert_eq!(r.headers, vec![(&b"Host"[..], &b"x"[..]), (b"A", b"b")]);
        assert_eq!(r.knob_str("chunk"), Some("2"));
        assert_eq!(r.body_chunks().len(), 2);
        let r = TextRequest::parse(b"GET /");
        assert_eq!(r.target, b"/");
        assert!(r.body.is_empty());
    }
}
