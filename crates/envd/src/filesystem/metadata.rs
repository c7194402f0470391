//! User-defined file metadata (E2B envd >= 0.6.2): string key/value pairs a
//! client attaches on upload (`X-Metadata-<key>: <value>` headers on
//! `POST /files`) and reads back in `EntryInfo.metadata` from Stat, ListDir,
//! MakeDir, Move and watch events.
//!
//! The pairs are stored on the file itself as extended attributes named
//! `user.e2b.<key>`, as E2B's envd does. Keeping them in the inode rather than
//! in a side table means they follow the file through renames (and `mv`, `cp
//! -a`, tar with xattrs) done by code inside the sandbox, vanish with it, are
//! captured by pause snapshots without any extra state in envd, and can even
//! be set out of band with `setfattr`. The `user.` namespace is the one Linux
//! lets ordinary files carry (overlayfs over tmpfs in sandboxes, ext4 in
//! tests); the `e2b.` part keeps our keys apart from `user.*` attributes other
//! tooling writes, which are neither reported nor touched.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use http::HeaderMap;
use xattr::FileExt;

use super::error::FsError;

/// The xattr namespace of metadata keys.
pub const XATTR_PREFIX: &str = "user.e2b.";

/// Upload request headers carrying metadata, lowercase as `http` stores names.
pub const HEADER_PREFIX: &str = "x-metadata-";

/// Linux caps a whole xattr name at 255 bytes (XATTR_NAME_MAX), prefix
/// included, so this is the longest key that can be stored at all.
pub const MAX_KEY_LEN: usize = 255 - XATTR_PREFIX.len();

/// Cap on the combined size of one file's metadata: every name (prefix
/// included) plus its value. ext4 keeps all of an inode's xattrs in one 4 KiB
/// block; checking a budget up front turns an oversized set into a clear 400
/// instead of an `ENOSPC` halfway through writing the attributes. This is
/// E2B's documented limit, so a set accepted there is accepted here.
pub const MAX_TOTAL_LEN: usize = 4096;

/// Metadata keyed by name; ordered so responses are deterministic.
pub type Metadata = BTreeMap<String, String>;

/// Collects `X-Metadata-<key>` headers of an upload into metadata. Keys are
/// lowercased (HTTP header names are case-insensitive, and the SDKs document
/// that keys come back lowercase); a repeated header counts with its first
/// value; a bare `X-Metadata-` header has no key and is ignored, as in E2B.
pub fn from_headers(headers: &HeaderMap) -> Result<Metadata, FsError> {
    let mut metadata = Metadata::new();
    for name in headers.keys() {
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        // `get` returns the first of repeated values.
        let Some(value) = headers.get(name) else {
            continue;
        };
        // hyper lets tabs and obs-text (0x80-0xFF) through in header values;
        // only printable US-ASCII is a valid metadata value.
        let value = printable_ascii(value.as_bytes()).ok_or_else(|| {
            FsError::InvalidArgument(format!(
                "invalid metadata value for key '{key}': values must be printable US-ASCII (0x20-0x7E)"
            ))
        })?;
        metadata.insert(key.to_ascii_lowercase(), value.to_string());
    }
    validate(&metadata)?;
    Ok(metadata)
}

fn printable_ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        // All ASCII, hence valid UTF-8.
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// Checks keys and values against what the SDKs and E2B's envd accept and
/// what the filesystem can hold, before anything is written.
pub fn validate(metadata: &Metadata) -> Result<(), FsError> {
    let mut total = 0;
    for (key, value) in metadata {
        if key.is_empty() {
            return Err(FsError::InvalidArgument(
                "metadata keys must not be empty".to_string(),
            ));
        }
        if printable_ascii(key.as_bytes()).is_none() {
            return Err(FsError::InvalidArgument(format!(
                "invalid metadata key {key:?}: keys must be printable US-ASCII (0x20-0x7E)"
            )));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(FsError::InvalidArgument(format!(
                "metadata key '{key}' is {} bytes long, the limit is {MAX_KEY_LEN}",
                key.len()
            )));
        }
        if printable_ascii(value.as_bytes()).is_none() {
            return Err(FsError::InvalidArgument(format!(
                "invalid metadata value for key '{key}': values must be printable US-ASCII (0x20-0x7E)"
            )));
        }
        total += XATTR_PREFIX.len() + key.len() + value.len();
    }
    if total > MAX_TOTAL_LEN {
        return Err(FsError::InvalidArgument(format!(
            "metadata takes {total} bytes (keys with the '{XATTR_PREFIX}' prefix plus values), the limit is {MAX_TOTAL_LEN}"
        )));
    }
    Ok(())
}

/// Makes `metadata` the whole metadata of the open `file`: keys stored by an
/// earlier upload but absent now are removed, so an upload without metadata
/// clears it. Truncating a file keeps its xattrs, so without this an
/// overwritten file would report stale metadata. Works on the descriptor, so
/// a concurrent rename of the path cannot redirect it to another file.
pub fn replace(file: &File, path: &Path, metadata: &Metadata) -> Result<(), FsError> {
    validate(metadata)?;
    let existing = match file.list_xattr() {
        Ok(names) => names,
        // Nothing can be stored there, so nothing is stale either.
        Err(e) if is_unsupported(&e) && metadata.is_empty() => return Ok(()),
        Err(e) => return Err(write_error(path, e)),
    };
    for name in existing {
        let Some(key) = metadata_key(&name) else {
            continue;
        };
        // A key that is not UTF-8 (set out of band) can never be asked for.
        if key.to_str().is_some_and(|key| metadata.contains_key(key)) {
            continue;
        }
        match file.remove_xattr(&name) {
            Ok(()) => {}
            // Removed concurrently: the goal is reached anyway.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(write_error(path, e)),
        }
    }
    for (key, value) in metadata {
        file.set_xattr(format!("{XATTR_PREFIX}{key}"), value.as_bytes())
            .map_err(|e| write_error(path, e))?;
    }
    Ok(())
}

/// The metadata stored on `path`, following a final symlink: an entry for a
/// symlink reports its target's type and mode, and Linux does not let a
/// symlink carry `user.*` attributes of its own. Metadata is secondary to the
/// entry it decorates, so a file without xattr support, a file that vanished
/// meanwhile or an unreadable attribute yields no metadata instead of failing
/// the Stat or ListDir. Attributes set out of band whose key or value is not
/// UTF-8 are skipped: proto strings must be UTF-8.
pub fn read(path: &Path) -> Metadata {
    let mut metadata = Metadata::new();
    let names = match xattr::list_deref(path) {
        Ok(names) => names,
        Err(e) => {
            if !is_unsupported(&e) && e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "cannot list metadata");
            }
            return metadata;
        }
    };
    for name in names {
        let Some(key) = metadata_key(&name) else {
            continue;
        };
        let Some(key) = key.to_str() else {
            continue;
        };
        match xattr::get_deref(path, &name) {
            Ok(Some(value)) => {
                if let Ok(value) = String::from_utf8(value) {
                    metadata.insert(key.to_string(), value);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot read metadata");
            }
        }
    }
    metadata
}

/// Gives `destination` the `user.*` attributes (metadata included) of
/// `source`, for moves across filesystems: `rename` keeps them for free,
/// `std::fs::copy` does not, and when it overwrites an existing file that
/// file's own attributes would otherwise survive. Like mv(1), failing to keep
/// attributes (e.g. a destination without xattr support) is a warning, not a
/// failed move. Other namespaces are left out: `trusted.*`/`security.*`
/// describe the source filesystem's policy rather than the file.
pub fn copy_user_xattrs(source: &Path, destination: &Path) {
    let user_names = |path: &Path| -> io::Result<Vec<std::ffi::OsString>> {
        Ok(xattr::list(path)?
            .filter(|name| name.as_bytes().starts_with(b"user."))
            .collect())
    };
    let warn = |what: &str, name: &OsStr, e: &io::Error| {
        tracing::warn!(
            from = %source.display(),
            to = %destination.display(),
            attribute = %name.to_string_lossy(),
            error = %e,
            "{what}"
        );
    };
    let wanted = match user_names(source) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => Vec::new(),
        Err(e) => {
            warn(
                "cannot list extended attributes to copy",
                OsStr::new(""),
                &e,
            );
            return;
        }
    };
    // Only an overwritten file has attributes of its own; a fresh copy has none.
    for stale in user_names(destination).unwrap_or_default() {
        if !wanted.contains(&stale) {
            if let Err(e) = xattr::remove(destination, &stale) {
                warn(
                    "stale extended attribute left on the moved file",
                    &stale,
                    &e,
                );
            }
        }
    }
    for name in wanted {
        let copied = xattr::get(source, &name).and_then(|value| match value {
            Some(value) => xattr::set(destination, &name, &value),
            None => Ok(()),
        });
        if let Err(e) = copied {
            warn("extended attribute not kept by the move", &name, &e);
        }
    }
}

/// The key of a `user.e2b.<key>` attribute name.
fn metadata_key(name: &OsStr) -> Option<&OsStr> {
    name.as_bytes()
        .strip_prefix(XATTR_PREFIX.as_bytes())
        .filter(|key| !key.is_empty())
        .map(OsStr::from_bytes)
}

fn is_unsupported(e: &io::Error) -> bool {
    // ENOTSUP and EOPNOTSUPP are the same number on Linux.
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

fn write_error(path: &Path, e: io::Error) -> FsError {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => FsError::FailedPrecondition(format!(
            "cannot store metadata on '{}': its filesystem does not support extended attributes",
            path.display()
        )),
        // setxattr reports a full per-inode attribute area as ENOSPC (ext4)
        // or E2BIG, which is about the metadata's size, not a full disk.
        Some(libc::ENOSPC) | Some(libc::E2BIG) | Some(libc::ERANGE) => {
            FsError::InvalidArgument(format!(
                "metadata does not fit in the extended attributes of '{}': {e}",
                path.display()
            ))
        }
        _ => FsError::io(format!("storing metadata on '{}'", path.display()), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn headers_become_lowercase_keys() {
        let got = from_headers(&headers(&[
            ("X-Metadata-Author", b"Mish"),
            ("x-metadata-Purpose", b"upload test"),
            ("X-Metadata-", b"no key"),
            ("Content-Type", b"application/octet-stream"),
            ("X-Metadata-Empty", b""),
        ]))
        .unwrap();
        assert_eq!(
            got,
            meta(&[
                ("author", "Mish"),
                ("purpose", "upload test"),
                ("empty", "")
            ])
        );
        assert!(from_headers(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn a_repeated_header_keeps_its_first_value() {
        let got = from_headers(&headers(&[
            ("X-Metadata-Author", b"first"),
            ("X-Metadata-Author", b"second"),
        ]))
        .unwrap();
        assert_eq!(got, meta(&[("author", "first")]));
    }

    #[test]
    fn non_printable_values_are_refused() {
        // (DEL and control bytes other than tab never get past `http`.)
        for bad in [&b"tab\there"[..], b"caf\xc3\xa9", b"\xff"] {
            let err = from_headers(&headers(&[("X-Metadata-K", bad)])).unwrap_err();
            assert!(matches!(err, FsError::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains("printable US-ASCII"), "{err}");
        }
    }

    #[test]
    fn validation_limits() {
        validate(&meta(&[("k", "v")])).unwrap();
        validate(&meta(&[(&"k".repeat(MAX_KEY_LEN), "v")])).unwrap();
        let err = validate(&meta(&[(&"k".repeat(MAX_KEY_LEN + 1), "v")])).unwrap_err();
        assert!(err.to_string().contains("limit is 246"), "{err}");
        assert!(validate(&meta(&[("", "v")])).is_err());
        assert!(validate(&meta(&[("k\u{e9}", "v")])).is_err());
        assert!(validate(&meta(&[("k", "line\nbreak")])).is_err());

        // Exactly at the budget passes, one byte more does not.
        let value = "v".repeat(MAX_TOTAL_LEN - XATTR_PREFIX.len() - 1);
        validate(&meta(&[("k", &value)])).unwrap();
        let err = validate(&meta(&[("k", &format!("{value}v"))])).unwrap_err();
        assert!(err.to_string().contains("limit is 4096"), "{err}");
    }

    #[test]
    fn replace_then_read_round_trips_and_clears() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let file = File::create(&path).unwrap();
        // Someone else's attribute in the user namespace is left alone.
        file.set_xattr("user.other", b"keep").unwrap();

        replace(&file, &path, &meta(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(read(&path), meta(&[("a", "1"), ("b", "2")]));

        replace(&file, &path, &meta(&[("b", "3")])).unwrap();
        assert_eq!(read(&path), meta(&[("b", "3")]));

        replace(&file, &path, &Metadata::new()).unwrap();
        assert!(read(&path).is_empty());
        assert_eq!(file.get_xattr("user.other").unwrap().unwrap(), b"keep");
    }

    #[test]
    fn read_follows_symlinks_and_skips_non_utf8() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let file = File::create(&path).unwrap();
        file.set_xattr("user.e2b.ok", b"yes").unwrap();
        file.set_xattr("user.e2b.bin", b"\xff\xfe").unwrap();
        file.set_xattr("user.e2b.", b"no key").unwrap();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        assert_eq!(read(&path), meta(&[("ok", "yes")]));
        assert_eq!(read(&link), meta(&[("ok", "yes")]));
        assert!(read(&tmp.path().join("missing")).is_empty());
    }

    #[test]
    fn copies_mirror_user_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("s");
        let destination = tmp.path().join("d");
        std::fs::write(&source, b"s").unwrap();
        std::fs::write(&destination, b"d").unwrap();
        xattr::set(&source, "user.e2b.kept", b"1").unwrap();
        xattr::set(&source, "user.other", b"2").unwrap();
        xattr::set(&destination, "user.e2b.stale", b"old").unwrap();

        copy_user_xattrs(&source, &destination);
        assert_eq!(read(&destination), meta(&[("kept", "1")]));
        assert_eq!(
            xattr::get(&destination, "user.other").unwrap().unwrap(),
            b"2"
        );
    }

    #[test]
    fn unsupported_filesystems() {
        // /proc has no xattr support: clearing is a no-op, storing is refused.
        let file = File::open("/proc/self/status").unwrap();
        let path = Path::new("/proc/self/status");
        replace(&file, path, &Metadata::new()).unwrap();
        let err = replace(&file, path, &meta(&[("a", "1")])).unwrap_err();
        assert!(
            matches!(
                err,
                FsError::FailedPrecondition(_) | FsError::PermissionDenied(_)
            ),
            "{err}"
        );
        assert!(read(path).is_empty());
    }
}
