//! The blocking filesystem operations behind the unary RPCs. Paths arrive
//! already resolved (see `paths::resolve`); callers run these on the
//! blocking pool.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sandbar_proto::filesystem::EntryInfo;

use super::entry::{entry_info, OwnerNames};
use super::error::FsError;
use super::paths::ensure_dirs;
use crate::users::UserInfo;

pub fn stat(path: &Path) -> Result<EntryInfo, FsError> {
    entry_info(path, &mut OwnerNames::default())
}

/// Lists `path` (following it if it is a symlink) down to `depth` levels
/// (0 counts as 1), depth-first in name order like E2B's walk. Entries keep
/// the requested path as their prefix even when it was a symlink, and
/// symlinked directories inside are reported but not descended into.
pub fn list_dir(path: &Path, depth: u32) -> Result<Vec<EntryInfo>, FsError> {
    let depth = depth.max(1);
    let resolved = std::fs::canonicalize(path)
        .map_err(|e| FsError::io(format!("path '{}' not found", path.display()), e))?;
    let meta = std::fs::metadata(&resolved)
        .map_err(|e| FsError::io(format!("directory '{}' not found", path.display()), e))?;
    if !meta.is_dir() {
        return Err(FsError::InvalidArgument(format!(
            "path '{}' is not a directory",
            path.display()
        )));
    }
    let mut entries = Vec::new();
    let mut names = OwnerNames::default();
    walk(&resolved, path, 1, depth, &mut names, &mut entries)?;
    Ok(entries)
}

fn walk(
    dir: &Path,
    reported_dir: &Path,
    level: u32,
    max_depth: u32,
    names: &mut OwnerNames,
    out: &mut Vec<EntryInfo>,
) -> Result<(), FsError> {
    let reader = match std::fs::read_dir(dir) {
        Ok(reader) => reader,
        // A subdirectory removed while we walk is not an error of the listing.
        Err(e) if level > 1 && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(FsError::io(
                format!("reading directory '{}'", dir.display()),
                e,
            ))
        }
    };
    let mut children: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for item in reader {
        let item =
            item.map_err(|e| FsError::io(format!("reading directory '{}'", dir.display()), e))?;
        children.push((item.file_name(), item.path()));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (file_name, real_path) in children {
        let meta = match std::fs::symlink_metadata(&real_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsError::io(format!("reading '{}'", real_path.display()), e)),
        };
        let reported = reported_dir.join(&file_name);
        let mut entry = super::entry::entry_from_metadata(&real_path, &meta, names);
        entry.path = reported.to_string_lossy().into_owned();
        out.push(entry);
        if meta.is_dir() && level < max_depth {
            walk(&real_path, &reported, level + 1, max_depth, names, out)?;
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents, owned by `user`.
pub fn make_dir(path: &Path, user: &UserInfo) -> Result<EntryInfo, FsError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(FsError::AlreadyExists(format!(
                "directory already exists: {}",
                path.display()
            )))
        }
        Ok(_) => {
            return Err(FsError::InvalidArgument(format!(
                "path already exists but it is not a directory: {}",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::io(format!("checking '{}'", path.display()), e)),
    }
    ensure_dirs(path, user.uid, user.gid)?;
    stat(path)
}

/// Renames `source` to `destination`, creating the destination's missing
/// parents owned by `user`.
pub fn rename(source: &Path, destination: &Path, user: &UserInfo) -> Result<EntryInfo, FsError> {
    std::fs::symlink_metadata(source)
        .map_err(|e| FsError::io(format!("source '{}' not found", source.display()), e))?;
    if let Some(parent) = destination.parent() {
        ensure_dirs(parent, user.uid, user.gid)?;
    }
    match std::fs::rename(source, destination) {
        Ok(()) => {}
        // rename(2) cannot cross filesystems (e.g. the rootfs and a tmpfs
        // /tmp); do what mv(1) does instead.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            move_across_filesystems(source, destination)?
        }
        Err(e) => {
            return Err(FsError::io(
                format!(
                    "moving '{}' to '{}'",
                    source.display(),
                    destination.display()
                ),
                e,
            ))
        }
    }
    stat(destination)
}

/// Copies `source` to `destination` keeping modes, owners and `user.*`
/// extended attributes (file metadata among them), then removes
/// `source`. A destination directory must not exist yet; a destination file
/// is replaced, as rename would.
fn move_across_filesystems(source: &Path, destination: &Path) -> Result<(), FsError> {
    let existing = std::fs::symlink_metadata(destination).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FsError::AlreadyExists(format!(
            "cannot move '{}' to another filesystem: '{}' already exists",
            source.display(),
            destination.display()
        )));
    }
    if let Err(e) = copy_tree(source, destination) {
        // Only what this call created is cleaned up.
        if existing.is_none() {
            let _ = remove(destination);
        }
        return Err(e);
    }
    remove(source)
}

fn copy_tree(source: &Path, destination: &Path) -> Result<(), FsError> {
    let ctx = |what: &str| {
        format!(
            "{what} '{}' to '{}'",
            source.display(),
            destination.display()
        )
    };
    let meta = std::fs::symlink_metadata(source).map_err(|e| FsError::io(ctx("reading"), e))?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = std::fs::read_link(source).map_err(|e| FsError::io(ctx("reading link"), e))?;
        std::os::unix::fs::symlink(target, destination)
            .map_err(|e| FsError::io(ctx("copying link"), e))?;
    } else if file_type.is_dir() {
        std::fs::create_dir(destination).map_err(|e| FsError::io(ctx("copying directory"), e))?;
        let entries =
            std::fs::read_dir(source).map_err(|e| FsError::io(ctx("reading directory"), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FsError::io(ctx("reading directory"), e))?;
            copy_tree(&entry.path(), &destination.join(entry.file_name()))?;
        }
        std::fs::set_permissions(destination, meta.permissions())
            .map_err(|e| FsError::io(ctx("copying mode of"), e))?;
        super::metadata::copy_user_xattrs(source, destination);
    } else if file_type.is_file() {
        std::fs::copy(source, destination).map_err(|e| FsError::io(ctx("copying"), e))?;
        // Keeps the file's metadata, which `std::fs::copy` would drop.
        super::metadata::copy_user_xattrs(source, destination);
    } else {
        return Err(FsError::InvalidArgument(format!(
            "cannot move the special file '{}' to another filesystem",
            source.display()
        )));
    }
    super::paths::chown(destination, meta.uid(), meta.gid())
}

/// Removes a file, a symlink (not its target) or a whole directory tree. A
/// path that does not exist is not an error, as in E2B.
pub fn remove(path: &Path) -> Result<(), FsError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io(format!("checking '{}'", path.display()), e)),
    };
    let result = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io(format!("removing '{}'", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use sandbar_proto::filesystem::FileType;

    use super::*;

    fn me() -> UserInfo {
        let uid = nix::unistd::getuid();
        let u = nix::unistd::User::from_uid(uid).unwrap().unwrap();
        UserInfo {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        }
    }

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        for dir in [
            "p/subdir1/subdir1_1",
            "p/subdir1/subdir1_2",
            "p/subdir2/subdir2_1",
            "p/subdir2/subdir2_2",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("p/file1.txt"), b"Hello, world!").unwrap();
        (tmp, root)
    }

    fn names(entries: &[EntryInfo]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn list_dir_respects_depth_and_order() {
        let (_tmp, root) = tree();
        let p = root.join("p");
        assert_eq!(
            names(&list_dir(&p, 0).unwrap()),
            ["file1.txt", "subdir1", "subdir2"]
        );
        assert_eq!(
            names(&list_dir(&p, 1).unwrap()),
            ["file1.txt", "subdir1", "subdir2"]
        );
        let deep = list_dir(&p, 2).unwrap();
        assert_eq!(
            names(&deep),
            [
                "file1.txt",
                "subdir1",
                "subdir1_1",
                "subdir1_2",
                "subdir2",
                "subdir2_1",
                "subdir2_2"
            ]
        );
        assert_eq!(deep[2].path, p.join("subdir1/subdir1_1").to_str().unwrap());
        assert_eq!(deep[0].r#type.as_known(), Some(FileType::FILE_TYPE_FILE));
        assert_eq!(
            deep[1].r#type.as_known(),
            Some(FileType::FILE_TYPE_DIRECTORY)
        );
        assert_eq!(list_dir(&p, 3).unwrap().len(), 7);
    }

    #[test]
    fn list_dir_through_a_symlink_keeps_the_requested_prefix() {
        let (_tmp, root) = tree();
        let link = root.join("plink");
        std::os::unix::fs::symlink(root.join("p"), &link).unwrap();
        let entries = list_dir(&link, 1).unwrap();
        assert_eq!(entries[0].path, link.join("file1.txt").to_str().unwrap());
    }

    #[test]
    fn list_dir_errors() {
        let (_tmp, root) = tree();
        assert!(matches!(
            list_dir(&root.join("nope"), 1),
            Err(FsError::NotFound(_))
        ));
        assert!(matches!(
            list_dir(&root.join("p/file1.txt"), 1),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn make_dir_creates_parents_and_reports_existing() {
        let (_tmp, root) = tree();
        let user = me();
        let entry = make_dir(&root.join("new/nested"), &user).unwrap();
        assert_eq!(entry.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(entry.name, "nested");
        assert!(matches!(
            make_dir(&root.join("new/nested"), &user),
            Err(FsError::AlreadyExists(_))
        ));
        assert!(matches!(
            make_dir(&root.join("p/file1.txt"), &user),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn rename_moves_and_creates_parents() {
        let (_tmp, root) = tree();
        let user = me();
        let entry = rename(
            &root.join("p/file1.txt"),
            &root.join("q/r/moved.txt"),
            &user,
        )
        .unwrap();
        assert_eq!(entry.name, "moved.txt");
        assert_eq!(entry.size, 13);
        assert!(!root.join("p/file1.txt").exists());
        assert!(matches!(
            rename(&root.join("p/file1.txt"), &root.join("x"), &user),
            Err(FsError::NotFound(_))
        ));
    }

    #[test]
    fn remove_files_dirs_and_missing_paths() {
        let (_tmp, root) = tree();
        remove(&root.join("p/file1.txt")).unwrap();
        assert!(!root.join("p/file1.txt").exists());
        remove(&root.join("p")).unwrap();
        assert!(!root.join("p").exists());
        remove(&root.join("p")).unwrap();

        let target = root.join("kept");
        std::fs::write(&target, b"x").unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        remove(&link).unwrap();
        assert!(
            target.exists(),
            "removing a symlink must not remove its target"
        );
    }
}
