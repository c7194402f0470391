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

/// Entries that are not files of the root filesystem: device nodes (the
/// runtime gives every sandbox its own `/dev`) and tar's own metadata.
fn skipped(kind: tar::EntryType, stats: &mut UnpackStats) -> bool {
    if kind.is_character_special() || kind.is_block_special() {
        stats.skipped_devices += 1;
        return true;
    }
    kind.is_pax_global_extensions()
        || kind.is_pax_local_extensions()
        || kind.is_gnu_longname()
        || kind.is_gnu_longlink()
}

/// Unpacks `reader` into `dest` (which must exist), shifting uids and gids by
/// `uid_base`. Device nodes are skipped: the runtime gives every sandbox its
/// own `/dev`.
pub fn unpack_shifted(reader: impl Read, dest: &Path, uid_base: u32) -> io::Result<UnpackStats> {
    let mut stats = UnpackStats::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if skipped(entry.header().entry_type(), &mut stats) {
            continue;
        }
        apply_entry(&mut entry, dest, uid_base, &mut stats)?;
    }
    Ok(stats)
}

/// Applies one image layer (a tar, OCI's layer format) on what `dest`
/// holds: whiteouts (`.wh.<name>`) remove what lower layers made, an
/// opaque marker (`.wh..wh..opq`) empties its directory of them, and an
/// entry replaces what is in its way (a file where a directory was, or the
/// other way round). Owners are shifted by `uid_base` as in
/// [`unpack_shifted`]. Removals resolve their path inside `dest` (openat2
/// `RESOLVE_IN_ROOT`), so a symlink an image planted cannot point them at
/// the host.
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    uid_base: u32,
    stats: &mut UnpackStats,
) -> io::Result<()> {
    let root = std::fs::File::open(dest)?;
    let mut added: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if skipped(entry.header().entry_type(), stats) {
            continue;
        }
        let rel = normalized(&entry.path()?);
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == b".wh..wh..opq" {
            // Only what lower layers made goes: this layer's entries stay.
            let kept: Vec<PathBuf> = added
                .iter()
                .filter(|p| p.parent() == Some(parent.as_path()))
                .cloned()
                .collect();
            clear_dir(&root, &parent, &kept)?;
            stats.entries += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
            remove_in_root(&root, &target)?;
            stats.entries += 1;
            continue;
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let is_dir = entry.header().entry_type().is_dir();
        make_way(&root, &rel, is_dir)?;
        apply_entry(&mut entry, dest, uid_base, stats)?;
        added.insert(rel);
    }
    Ok(())
}

/// `./a/b/` as `a/b`.
fn normalized(p: &Path) -> PathBuf {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// The directory `rel` inside the root, resolved there (symlinks and `..`
/// cannot leave it).
fn open_in_root(root: &std::fs::File, rel: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(
        root,
        path,
        OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(io::Error::from)
}

/// Where `rel` is, its parent resolved inside the root and pinned by a
/// descriptor (`/proc/self/fd/N/name`, which std's calls do not follow in
/// the last component); `None` when its parent is not there.
fn in_parent(
    root: &std::fs::File,
    rel: &Path,
) -> io::Result<Option<(std::os::fd::OwnedFd, PathBuf)>> {
    use std::os::fd::AsRawFd;
    let Some(name) = rel.file_name() else {
        return Ok(None);
    };
    let parent = match open_in_root(root, rel.parent().unwrap_or(Path::new(""))) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
    Ok(Some((parent, path)))
}

/// Removes `rel` (a file, a symlink or a whole directory) below the root;
/// with `keep_dir`, a directory there stays.
fn remove_in_root_but(root: &std::fs::File, rel: &Path, keep_dir: bool) -> io::Result<()> {
    let Some((_parent, path)) = in_parent(root, rel)? else {
        return Ok(());
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
        Ok(_) => std::fs::remove_file(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `rel` (a file, a symlink or a whole directory) below the root,
/// if it is there.
fn remove_in_root(root: &std::fs::File, rel: &Path) -> io::Result<()> {
    remove_in_root_but(root, rel, false)
}

/// Empties directory `rel` below the root but for `kept`.
fn clear_dir(root: &std::fs::File, rel: &Path, kept: &[PathBuf]) -> io::Result<()> {
    let dir = match open_in_root(root, rel) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    use std::os::fd::AsRawFd;
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    for child in std::fs::read_dir(&listing)? {
        let child = child?;
        let rel_child = rel.join(child.file_name());
        if !kept.contains(&rel_child) {
            remove_in_root(root, &rel_child)?;
        }
    }
    Ok(())
}

/// Before an entry is written: what a lower layer left at its path goes
/// unless both are directories (a directory entry then only updates it).
fn make_way(root: &std::fs::File, rel: &Path, is_dir: bool) -> io::Result<()> {
    remove_in_root_but(root, rel, is_dir)
}

/// Writes one entry below `dest` with its owner shifted, its mode (setuid
/// included) and its extended attributes (file capabilities made valid in
/// the sandbox's user namespace).
fn apply_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    uid_base: u32,
    stats: &mut UnpackStats,
) -> io::Result<()> {
    let kind = entry.header().entry_type();
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
    Ok(())
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

    /// A layer tar of (path, kind, target-or-content) entries, owned by 0.
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            if kind.is_symlink() {
                h.set_size(0);
                h.set_link_name(data).unwrap();
                h.set_path(path).unwrap();
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_path(path).unwrap();
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_apply_whiteouts_opaque_dirs_and_replacements() {
        use tar::EntryType as E;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let base = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root).unwrap());
        let mut stats = UnpackStats::default();
        let lower = layer(&[
            ("etc/", E::Directory, ""),
            ("etc/motd", E::Regular, "hello"),
            ("etc/keep", E::Regular, "kept"),
            ("opt/", E::Directory, ""),
            ("opt/a", E::Regular, "a"),
            ("opt/b/", E::Directory, ""),
            ("opt/b/c", E::Regular, "c"),
            ("was-dir/", E::Directory, ""),
            ("was-dir/x", E::Regular, "x"),
            ("was-file", E::Regular, "f"),
        ]);
        apply_layer(&lower[..], root, base, &mut stats).unwrap();
        let upper = layer(&[
            ("etc/.wh.motd", E::Regular, ""),
            ("opt/", E::Directory, ""),
            ("opt/.wh..wh..opq", E::Regular, ""),
            ("opt/new", E::Regular, "new"),
            ("was-dir", E::Regular, "now a file"),
            ("was-file/", E::Directory, ""),
            ("was-file/inner", E::Regular, "i"),
            ("etc/keep", E::Regular, "replaced"),
        ]);
        apply_layer(&upper[..], root, base, &mut stats).unwrap();
        assert!(!root.join("etc/motd").exists(), "whited out");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/keep")).unwrap(),
            "replaced"
        );
        let mut opt: Vec<_> = std::fs::read_dir(root.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        opt.sort();
        assert_eq!(
            opt,
            ["new"],
            "an opaque dir keeps only this layer's entries"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("was-dir")).unwrap(),
            "now a file"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("was-file/inner")).unwrap(),
            "i"
        );
    }

    #[test]
    fn a_whiteout_through_a_planted_symlink_stays_in_the_root() {
        use tar::EntryType as E;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "host file").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let base = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root).unwrap());
        let mut stats = UnpackStats::default();
        let target = outside.path().to_str().unwrap().to_string();
        let planted = layer(&[("evil", E::Symlink, &target)]);
        apply_layer(&planted[..], root, base, &mut stats).unwrap();
        let whiteout = layer(&[("evil/.wh.victim", E::Regular, "")]);
        apply_layer(&whiteout[..], root, base, &mut stats).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "host file",
            "the symlink resolves inside the root, where there is no victim"
        );
        let opaque = layer(&[("evil/.wh..wh..opq", E::Regular, "")]);
        apply_layer(&opaque[..], root, base, &mut stats).unwrap();
        assert!(outside.path().join("victim").exists());
        let through = layer(&[("evil/written", E::Regular, "x")]);
        assert!(
            apply_layer(&through[..], root, base, &mut stats).is_err(),
            "tar refuses to write through it"
        );
        assert!(!outside.path().join("written").exists());
    }
}
