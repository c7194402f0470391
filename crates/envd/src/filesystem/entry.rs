//! Building `EntryInfo` from what `lstat` says about a path, the way E2B's
//! envd reports it (the SDKs and user code compare these fields verbatim).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use buffa_types::google::protobuf::Timestamp;
use sandbar_proto::filesystem::{EntryInfo, FileType};

use super::error::FsError;

/// Caches uid/gid -> name lookups for the span of one request: a listing of
/// a large directory would otherwise re-read the passwd database per entry.
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl OwnerNames {
    pub fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_else(|| gid.to_string())
            })
            .clone()
    }
}

/// Describes `path` without following a final symlink. For a symlink, as E2B
/// does: `symlink_target` is the fully resolved target (or the link itself
/// when it cannot be resolved), `type` and `mode` are the target's, while
/// size, permissions string, owner and times are the link's own; metadata
/// (the `user.e2b.*` xattrs, see `metadata`) is the target's as well.
pub fn entry_info(path: &Path, names: &mut OwnerNames) -> Result<EntryInfo, FsError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        FsError::io(
            format!("file '{}' not found or not accessible", path.display()),
            e,
        )
    })?;
    Ok(entry_from_metadata(path, &meta, names))
}

pub fn entry_from_metadata(path: &Path, meta: &Metadata, names: &mut OwnerNames) -> EntryInfo {
    let (file_type, mode, symlink_target) = if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match std::fs::metadata(&target) {
            Ok(target_meta) => (
                file_type_of(&target_meta),
                target_meta.mode() & 0o777,
                Some(target),
            ),
            Err(_) => (FileType::FILE_TYPE_UNSPECIFIED, 0, Some(target)),
        }
    } else {
        (file_type_of(meta), meta.mode() & 0o777, None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_string());
    EntryInfo {
        name,
        r#type: file_type.into(),
        path: path.to_string_lossy().into_owned(),
        size: meta.size() as i64,
        mode,
        permissions: permissions_string(meta),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: Timestamp::from_unix(meta.mtime(), meta.mtime_nsec() as i32).into(),
        symlink_target: symlink_target.map(|t| t.to_string_lossy().into_owned()),
        metadata: super::metadata::read(path).into_iter().collect(),
        is_symlink: meta.file_type().is_symlink(),
        ..Default::default()
    }
}

fn file_type_of(meta: &Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_file() {
        FileType::FILE_TYPE_FILE
    } else if ft.is_dir() {
        FileType::FILE_TYPE_DIRECTORY
    } else if ft.is_symlink() {
        FileType::FILE_TYPE_SYMLINK
    } else {
        FileType::FILE_TYPE_UNSPECIFIED
    }
}

/// The mode as E2B's envd prints it, which is Go's `FileMode.String()`: one
/// letter per special bit (`d` dir, `L` symlink, `D` device, `p` pipe, `S`
/// socket, `u` setuid, `g` setgid, `c` char device, `t` sticky) or `-` when
/// none, then `rwxrwxrwx`. So `/tmp` reads `dtrwxrwxrwx`, not `drwxrwxrwt`.
pub fn permissions_string(meta: &Metadata) -> String {
    let ft = meta.file_type();
    let mode = meta.mode();
    let mut out = String::with_capacity(12);
    if ft.is_dir() {
        out.push('d');
    }
    if ft.is_symlink() {
        out.push('L');
    }
    if ft.is_block_device() || ft.is_char_device() {
        out.push('D');
    }
    if ft.is_fifo() {
        out.push('p');
    }
    if ft.is_socket() {
        out.push('S');
    }
    if mode & libc::S_ISUID != 0 {
        out.push('u');
    }
    if mode & libc::S_ISGID != 0 {
        out.push('g');
    }
    if ft.is_char_device() {
        out.push('c');
    }
    if mode & libc::S_ISVTX != 0 {
        out.push('t');
    }
    if out.is_empty() {
        out.push('-');
    }
    out.push_str(&rwx(mode));
    out
}

fn rwx(mode: u32) -> String {
    const LETTERS: [char; 3] = ['r', 'w', 'x'];
    (0..9)
        .map(|i| {
            if mode & (1 << (8 - i)) != 0 {
                LETTERS[i % 3]
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn perms_of(path: &Path) -> String {
        permissions_string(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn rwx_bits() {
        assert_eq!(rwx(0o644), "rw-r--r--");
        assert_eq!(rwx(0o755), "rwxr-xr-x");
        assert_eq!(rwx(0o000), "---------");
        assert_eq!(rwx(0o777), "rwxrwxrwx");
        assert_eq!(rwx(0o421), "r---w---x");
    }

    #[test]
    fn permission_strings_match_go_file_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(perms_of(&file), "-rw-r--r--");

        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(perms_of(&dir), "drwxr-xr-x");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(perms_of(&dir), "dtrwxrwxrwx");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(perms_of(&file), "urwxr-xr-x");

        let link = tmp.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        assert_eq!(perms_of(&link), "Lrwxrwxrwx");

        assert_eq!(perms_of(Path::new("/dev/null")), "Dcrw-rw-rw-");
    }

    #[test]
    fn entry_of_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let entry = entry_info(&file, &mut OwnerNames::default()).unwrap();
        assert_eq!(entry.name, "a.txt");
        assert_eq!(entry.path, file.to_str().unwrap());
        assert_eq!(entry.r#type.as_known(), Some(FileType::FILE_TYPE_FILE));
        assert_eq!(entry.size, 5);
        assert_eq!(entry.mode, 0o644);
        assert_eq!(entry.permissions, "-rw-r--r--");
        assert!(!entry.owner.is_empty() && !entry.group.is_empty());
        assert!(entry.modified_time.is_set());
        assert_eq!(entry.symlink_target, None);
        assert!(entry.metadata.is_empty());
    }

    #[test]
    fn entry_carries_the_files_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("tagged.txt");
        std::fs::write(&file, b"x").unwrap();
        xattr::set(&file, "user.e2b.owner-team", b"infra").unwrap();
        xattr::set(&file, "user.unrelated", b"not ours").unwrap();
        let entry = entry_info(&file, &mut OwnerNames::default()).unwrap();
        assert_eq!(entry.metadata.len(), 1);
        assert_eq!(entry.metadata["owner-team"], "infra");
    }

    #[test]
    fn entry_of_a_symlink_describes_link_and_target() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let dir = root.join("real");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();

        let entry = entry_info(&link, &mut OwnerNames::default()).unwrap();
        assert_eq!(entry.name, "link");
        assert_eq!(entry.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(entry.mode, 0o750);
        assert_eq!(entry.permissions, "Lrwxrwxrwx");
        assert_eq!(entry.size, 4, "the link's own size: the length of 'real'");
        assert_eq!(entry.symlink_target.as_deref(), dir.to_str());

        let dangling = root.join("dangling");
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
        let entry = entry_info(&dangling, &mut OwnerNames::default()).unwrap();
        assert_eq!(
            entry.r#type.as_known(),
            Some(FileType::FILE_TYPE_UNSPECIFIED)
        );
        assert_eq!(entry.symlink_target.as_deref(), dangling.to_str());
    }

    #[test]
    fn missing_path_is_not_found() {
        let err = entry_info(
            Path::new("/definitely/not/here"),
            &mut OwnerNames::default(),
        )
        .unwrap_err();
        assert!(matches!(err, FsError::NotFound(_)));
    }

    #[test]
    fn root_names_resolve() {
        let mut names = OwnerNames::default();
        assert_eq!(names.user(0), "root");
        assert_eq!(names.group(0), "root");
        assert_eq!(names.user(4_000_000_000), "4000000000");
    }
}
