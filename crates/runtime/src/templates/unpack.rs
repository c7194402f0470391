//! Unpacking a root filesystem tarball with every owner shifted into the
//! sandboxes' uid range, so that root inside a sandbox (host uid `uid_base`)
//! owns what root owned in the image.
//!
//! The `tar` crate unpacks; ownership, setuid bits and extended attributes
//! are applied here afterwards, because `chown` clears setuid bits and file
//! capabilities, and capabilities must be rewritten for the user namespace.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// What an unpack did.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub skipped_devices: u64,
    pub xattrs_failed: u64,
}

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;

/// A `security.capability` value made valid inside a user namespace whose
/// root is host uid `root`: revision 3 carries the namespace root's uid;
/// revision 2 capabilities would only apply to the host's root.
fn namespaced_caps(value: &[u8], root: u32) -> Option<Vec<u8>> {
    if value.len() < 20 {
        return None;
    }
    let magic = u32::from_le_bytes(value[0..4].try_into().ok()?);
    let rev = magic & VFS_CAP_REVISION_MASK;
    if rev != VFS_CAP_REVISION_2 && rev != VFS_CAP_REVISION_3 {
        return None;
    }
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&((magic & !VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_3).to_le_bytes());
    out.extend_from_slice(&value[4..20]);
    out.extend_from_slice(&root.to_le_bytes());
    Some(out)
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = crate::sys::cstr(path)?;
    let n = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name"))?;
    // SAFETY: valid C strings and a buffer with its length.
    let ret = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The path of an entry below `dest`, or `None` if it would leave it.
fn inside(dest: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Unpacks `reader` into `dest` (which must exist), shifting uids and gids by
/// `uid_base`. Device nodes are skipped: the runtime gives every sandbox its
/// own `/dev`.
pub fn unpack_shifted(reader: impl Read, dest: &Path, uid_base: u32) -> io::Result<UnpackStats> {
    let mut stats = UnpackStats::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            stats.skipped_devices += 1;
            continue;
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let rel = entry.path()?.into_owned();
        let Some(full) = inside(dest, &rel) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {} leaves the root", rel.display()),
            ));
        };
        let uid = u32::try_from(entry.header().uid()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uid out of range"))?;
        let gid = u32::try_from(entry.header().gid()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "gid out of range"))?;
        if uid >= 65536 || gid >= 65536 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: owner {uid}:{gid} outside the mapped range",
                    rel.display()
                ),
            ));
        }
        let mode = entry.header().mode()? & 0o7777;
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax.flatten() {
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let is_root = full == dest;
        if !is_root {
            entry.set_preserve_permissions(true);
            entry.set_preserve_mtime(true);
            entry.set_unpack_xattrs(false);
            if !entry.unpack_in(dest)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry {} leaves the root", rel.display()),
                ));
            }
        }
        stats.entries += 1;
        stats.bytes += entry.header().size().unwrap_or(0);

        std::os::unix::fs::lchown(&full, Some(uid_base + uid), Some(uid_base + gid))
            .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", full.display())))?;
        if !kind.is_symlink() {
            // chown cleared setuid/setgid: put the image's mode back.
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))?;
        }
        for (name, value) in xattrs {
            let value = if name == "security.capability" {
                match namespaced_caps(&value, uid_base) {
                    Some(v) => v,
                    None => {
                        stats.xattrs_failed += 1;
                        continue;
                    }
                }
            } else {
                value
            };
            if let Err(e) = lsetxattr(&full, &name, &value) {
                stats.xattrs_failed += 1;
                tracing::debug!(path = %String::from_utf8_lossy(full.as_os_str().as_bytes()), xattr = %name, error = %e, "extended attribute not kept");
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_become_revision_3_with_the_namespace_root() {
        let mut v2 = Vec::new();
        v2.extend_from_slice(&(VFS_CAP_REVISION_2 | 1).to_le_bytes());
        v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v3 = namespaced_caps(&v2, 100_000).unwrap();
        assert_eq!(v3.len(), 24);
        assert_eq!(
            u32::from_le_bytes(v3[0..4].try_into().unwrap()),
            VFS_CAP_REVISION_3 | 1
        );
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(u32::from_le_bytes(v3[20..24].try_into().unwrap()), 100_000);
        assert!(namespaced_caps(&[0; 8], 1).is_none());
    }

    #[test]
    fn unpack_shifts_owners_and_keeps_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_size(data.len() as u64);
            h.set_path(path).unwrap();
            h.set_cksum();
            builder.append(&h, data).unwrap();
        };
        add("./", tar::EntryType::Directory, 0o755, 0, b"");
        add("./bin/", tar::EntryType::Directory, 0o755, 0, b"");
        add("./bin/su", tar::EntryType::Regular, 0o4755, 0, b"#!");
        add("./home/", tar::EntryType::Directory, 0o755, 0, b"");
        add("./home/user/", tar::EntryType::Directory, 0o750, 1000, b"");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_path("./dev-null").unwrap();
        h.set_mode(0o666);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append(&h, &b""[..]).unwrap();
        let data = builder.into_inner().unwrap();

        let base = 300_000;
        let stats = unpack_shifted(&data[..], dir.path(), base).unwrap();
        assert_eq!(stats.skipped_devices, 1);
        use std::os::unix::fs::MetadataExt;
        let su = std::fs::metadata(dir.path().join("bin/su")).unwrap();
        assert_eq!((su.uid(), su.gid()), (base, base));
        assert_eq!(su.mode() & 0o7777, 0o4755);
        let home = std::fs::metadata(dir.path().join("home/user")).unwrap();
        assert_eq!((home.uid(), home.mode() & 0o7777), (base + 1000, 0o750));
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), base);
        assert!(!dir.path().join("dev-null").exists());
    }
}
