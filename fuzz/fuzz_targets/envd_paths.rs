//! Feeds a client path, the acting user's home and the sandbox's default
//! workdir (input lines 1-3; a missing or empty third line is no workdir) to
//! envd's `filesystem::paths::resolve`, which every Connect
//! filesystem call and `/files` use (`~` expansion, relative paths, `.`/`..`).
//!
//! Beyond "no panic": a resolved path is absolute and normalized (only
//! normal components after the root; `normalize` leaves it unchanged); an
//! absolute request resolves to its own normal form; a home-relative or `~`
//! request without `..` stays inside the home; errors are only for NUL bytes
//! and `~user` forms.

#![no_main]

use std::path::{Component, Path, PathBuf};

use envd::fuzzing::{normalize, resolve, FsError, UserInfo};
use libfuzzer_sys::fuzz_target;

fn is_normal(p: &Path) -> bool {
    let mut parts = p.components();
    parts.next() == Some(Component::RootDir) && parts.all(|c| matches!(c, Component::Normal(_)))
}

struct Input<'a> {
    path: &'a str,
    workdir: Option<&'a str>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let input = Input {
        path: lines.next().unwrap_or(""),
        workdir: None,
    };
    // passwd homes are absolute; a relative one is folded from the root.
    let home = lines
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or("/home/user");
    let input = Input {
        workdir: lines.next().filter(|w| !w.is_empty()),
        ..input
    };
    let user = UserInfo {
        name: "user".into(),
        uid: 1000,
        gid: 1000,
        home: PathBuf::from(home),
        shell: PathBuf::from("/bin/bash"),
    };
    // What `resolve` works on once the workdir stands in for an empty path.
    let effective = match input.path {
        "" => input.workdir.unwrap_or(""),
        p => p,
    };

    match resolve(input.path, &user, input.workdir) {
        Ok(resolved) => {
            assert!(is_normal(&resolved), "{resolved:?} is not normalized");
            assert_eq!(
                normalize(&resolved),
                resolved,
                "normalize is not idempotent"
            );
            assert!(!input.path.contains('\0'));
            let home = normalize(&user.home);
            let no_parent = !Path::new(effective)
                .components()
                .any(|c| c == Component::ParentDir);
            if Path::new(effective).is_absolute() {
                assert_eq!(resolved, normalize(Path::new(effective)));
            } else if no_parent {
                // Relative, `~` or `~/x`: inside the home.
                assert!(
                    resolved.starts_with(&home),
                    "{effective:?} escaped {home:?} to {resolved:?}"
                );
            }
        }
        Err(FsError::InvalidArgument(_)) => {
            let tilde_user = effective.starts_with('~')
                && !(effective.len() == 1 || effective[1..].starts_with('/'));
            assert!(
                input.path.contains('\0') || tilde_user,
                "refused {:?} (workdir {:?})",
                input.path,
                input.workdir
            );
        }
        Err(e) => panic!("unexpected error kind for {:?}: {e:?}", input.path),
    }
});
