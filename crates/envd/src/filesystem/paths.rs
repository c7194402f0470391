//! Which user a request acts as, how its paths resolve, and creating missing
//! parent directories owned by that user. Shared by the Connect service and
//! the `/files` endpoints so both resolve paths the same way.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use http::HeaderMap;

use super::error::FsError;
use crate::state::EnvdState;
use crate::users::{self, UserInfo};

/// The user named by Basic auth, else the sandbox's default user.
pub fn acting_user(state: &EnvdState, headers: &HeaderMap) -> Result<UserInfo, FsError> {
    let name = users::from_basic_auth(headers).unwrap_or_else(|| state.default_user());
    users::lookup(&name).map_err(|e| FsError::Unauthenticated(e.to_string()))
}

/// Resolves a client path for `user`: an empty path is the default workdir
/// (or the home), `~` and `~/x` expand to the home, relative paths are taken
/// from the home, and `.`/`..` are folded lexically so the reported path is
/// the one the client would expect.
pub fn resolve(
    path: &str,
    user: &UserInfo,
    default_workdir: Option<&str>,
) -> Result<PathBuf, FsError> {
    if path.contains('\0') {
        return Err(FsError::InvalidArgument(format!(
            "path '{}' contains a NUL byte",
            path.escape_debug()
        )));
    }
    let path = match path {
        "" => default_workdir.unwrap_or(""),
        p => p,
    };
    let expanded: PathBuf = if let Some(rest) = path.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(FsError::InvalidArgument(format!(
                "cannot expand '{path}' for user '{}': only '~' (the acting user's home) is supported",
                user.name
            )));
        }
        user.home.join(rest.trim_start_matches('/'))
    } else if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        user.home.join(path)
    };
    Ok(normalize(&expanded))
}

/// Folds `.` and `..` without touching the filesystem; `..` at the root
/// stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
        }
    }
    out
}

/// Creates `dir` and every missing ancestor (mode 0755), handing each
/// directory it creates to `uid:gid`. Existing directories are left alone.
pub fn ensure_dirs(dir: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(current) = cursor {
        match std::fs::metadata(current) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(FsError::InvalidArgument(format!(
                    "path '{}' exists and is not a directory",
                    current.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(current),
            Err(e) => {
                return Err(FsError::io(
                    format!("checking directory '{}'", current.display()),
                    e,
                ))
            }
        }
        cursor = current.parent();
    }
    for created in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(created) {
            Ok(()) => {}
            // Someone else made it meanwhile; it still needs our owner if it
            // is a directory and nobody chowned it yet, which is harmless to redo.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !std::fs::metadata(created).is_ok_and(|m| m.is_dir()) {
                    return Err(FsError::InvalidArgument(format!(
                        "path '{}' exists and is not a directory",
                        created.display()
                    )));
                }
            }
            Err(e) => {
                return Err(FsError::io(
                    format!("creating directory '{}'", created.display()),
                    e,
                ))
            }
        }
        chown(created, uid, gid)?;
    }
    Ok(())
}

/// Changes the owner of `path` (not following a final symlink) unless it
/// already has that owner, so an unprivileged envd still works on its own files.
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| FsError::io(format!("checking owner of '{}'", path.display()), e))?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| FsError::io(format!("changing owner of '{}'", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/user"),
            shell: PathBuf::from("/bin/bash"),
        }
    }

    fn resolved(path: &str, workdir: Option<&str>) -> String {
        resolve(path, &user(), workdir)
            .unwrap()
            .display()
            .to_string()
    }

    #[test]
    fn relative_paths_resolve_against_the_home() {
        assert_eq!(resolved("a.txt", None), "/home/user/a.txt");
        assert_eq!(resolved("dir/sub/b", None), "/home/user/dir/sub/b");
        assert_eq!(resolved("./a.txt", None), "/home/user/a.txt");
        assert_eq!(resolved("../other/x", None), "/home/other/x");
    }

    #[test]
    fn tilde_expands_to_the_home() {
        assert_eq!(resolved("~", None), "/home/user");
        assert_eq!(resolved("~/", None), "/home/user");
        assert_eq!(resolved("~/x/y", None), "/home/user/x/y");
        assert!(matches!(
            resolve("~root/x", &user(), None),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn absolute_paths_are_normalized() {
        assert_eq!(resolved("/etc/passwd", None), "/etc/passwd");
        assert_eq!(resolved("/tmp/../etc/./hosts", None), "/etc/hosts");
        assert_eq!(resolved("/../..", None), "/");
        assert_eq!(resolved("/tmp/dir/", None), "/tmp/dir");
    }

    #[test]
    fn empty_path_is_the_workdir_or_the_home() {
        assert_eq!(resolved("", None), "/home/user");
        assert_eq!(resolved("", Some("/srv/app")), "/srv/app");
        assert_eq!(resolved("x", Some("/srv/app")), "/home/user/x");
    }

    #[test]
    fn nul_bytes_are_rejected() {
        assert!(matches!(
            resolve("a\0b", &user(), None),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn ensure_dirs_creates_missing_parents_and_refuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let deep = tmp.path().join("a/b/c");
        ensure_dirs(&deep, uid, gid).unwrap();
        assert!(deep.is_dir());
        assert_eq!(std::fs::metadata(&deep).unwrap().uid(), uid);
        // Idempotent.
        ensure_dirs(&deep, uid, gid).unwrap();

        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let under_file = tmp.path().join("file/sub");
        assert!(matches!(
            ensure_dirs(&under_file, uid, gid),
            Err(FsError::InvalidArgument(_))
        ));
    }
}
