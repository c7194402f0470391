//! `filesystem.Filesystem` against the built envd binary, over the Connect
//! JSON codec the SDKs use. Needs root (envd hands files to `user`).

mod envd_fs_support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use envd_fs_support::{mounted_under, test_user, Envd, HomeScratch, Tmpfs};
use http::StatusCode;
use serde_json::json;

/// inotify descriptors envd holds: each live watch owns exactly one.
fn inotify_fds(envd: &Envd) -> usize {
    let pid = envd.pid();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

async fn wait_for_inotify_fds(envd: &Envd, expected: usize) {
    for _ in 0..100 {
        if inotify_fds(envd) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "envd holds {} inotify fds, expected {expected}",
        inotify_fds(envd)
    );
}

#[tokio::test]
async fn make_stat_list_move_remove_as_user() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("fs-token"), "user");
    let scratch = HomeScratch::new(&user, "fs");
    let rel = scratch.rel();

    let (status, made) = envd
        .rpc("MakeDir", json!({"path": format!("{rel}/a/b")}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(
        made["entry"]["path"],
        scratch.path.join("a/b").to_str().unwrap()
    );
    assert_eq!(made["entry"]["owner"], "user");
    for dir in [
        scratch.path.clone(),
        scratch.path.join("a"),
        scratch.path.join("a/b"),
    ] {
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "{} owned by user",
            dir.display()
        );
    }

    let (status, again) = envd
        .rpc("MakeDir", json!({"path": format!("{rel}/a/b")}), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["code"], "already_exists");

    std::fs::write(scratch.path.join("a/hello.txt"), b"hello").unwrap();
    std::os::unix::fs::lchown(
        scratch.path.join("a/hello.txt"),
        Some(user.uid),
        Some(user.gid),
    )
    .unwrap();
    std::fs::set_permissions(
        scratch.path.join("a/hello.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (status, stat) = envd
        .rpc(
            "Stat",
            json!({"path": format!("~/{rel}/a/hello.txt")}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stat}");
    let entry = &stat["entry"];
    assert_eq!(entry["name"], "hello.txt");
    assert_eq!(entry["type"], "FILE_TYPE_FILE");
    assert_eq!(entry["size"], "5");
    assert_eq!(entry["mode"], 420);
    assert_eq!(entry["permissions"], "-rw-r--r--");
    assert_eq!(entry["owner"], "user");
    assert_eq!(entry["group"], "user");
    assert!(entry["modifiedTime"].as_str().unwrap().ends_with('Z'));
    assert!(entry.get("symlinkTarget").is_none());

    std::os::unix::fs::symlink("hello.txt", scratch.path.join("a/link.txt")).unwrap();
    let (_, stat) = envd
        .rpc("Stat", json!({"path": format!("{rel}/a/link.txt")}), None)
        .await;
    assert_eq!(
        stat["entry"]["symlinkTarget"],
        scratch.path.join("a/hello.txt").to_str().unwrap()
    );
    assert_eq!(stat["entry"]["type"], "FILE_TYPE_FILE");

    let (status, listed) = envd
        .rpc("ListDir", json!({"path": rel.clone(), "depth": 2}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "hello.txt", "link.txt"]);
    let (_, shallow) = envd
        .rpc("ListDir", json!({"path": rel.clone()}), None)
        .await;
    assert_eq!(
        shallow["entries"].as_array().unwrap().len(),
        1,
        "depth 0 means 1"
    );

    let (status, moved) = envd
        .rpc(
            "Move",
            json!({"source": format!("{rel}/a/hello.txt"), "destination": format!("{rel}/c/d/moved.txt")}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        moved["entry"]["path"],
        scratch.path.join("c/d/moved.txt").to_str().unwrap()
    );
    assert_eq!(
        std::fs::metadata(scratch.path.join("c/d")).unwrap().uid(),
        user.uid
    );

    let (status, _) = envd
        .rpc("Remove", json!({"path": format!("{rel}/c")}), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!scratch.path.join("c").exists());
    let (status, _) = envd
        .rpc("Remove", json!({"path": format!("{rel}/c")}), None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "removing what is gone is fine, as in E2B"
    );

    let (status, missing) = envd
        .rpc("Stat", json!({"path": format!("{rel}/nope")}), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["code"], "not_found");

    std::fs::write(scratch.path.join("plain.txt"), b"x").unwrap();
    let (status, not_dir) = envd
        .rpc("ListDir", json!({"path": format!("{rel}/plain.txt")}), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(not_dir["code"], "invalid_argument");

    let (status, bad) = envd.rpc("Stat", json!({"path": "~nobody/x"}), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["code"], "invalid_argument");
}

#[tokio::test]
async fn the_basic_auth_user_decides_home_and_owner() {
    let Some(_user) = test_user() else { return };
    let envd = Envd::start(None, "user");
    let name = format!(
        "sandbar-fs-root-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let (status, made) = envd
        .rpc("MakeDir", json!({"path": name.clone()}), Some("root"))
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let root_home = nix::unistd::User::from_name("root").unwrap().unwrap().dir;
    assert_eq!(
        made["entry"]["path"],
        root_home.join(&name).to_str().unwrap()
    );
    assert_eq!(made["entry"]["owner"], "root");
    std::fs::remove_dir(root_home.join(&name)).unwrap();

    let (status, err) = envd
        .rpc("Stat", json!({"path": "/"}), Some("no-such-user-xyz"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "unauthenticated");
}

#[tokio::test]
async fn watch_dir_streams_start_events_and_keepalives_then_lets_go() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("watch-token"), "user");
    let scratch = HomeScratch::new(&user, "watch");
    std::fs::create_dir_all(scratch.path.join("sub")).unwrap();
    let baseline = inotify_fds(&envd);

    let mut stream = envd
        .open_stream(
            "WatchDir",
            json!({"path": scratch.rel(), "recursive": true, "includeEntry": true}),
            &[("keepalive-ping-interval", "1")],
        )
        .await;
    let (flags, first) = stream.next_within(5).await.unwrap();
    assert_eq!(flags, 0);
    assert_eq!(first, json!({"start": {}}));
    wait_for_inotify_fds(&envd, baseline + 1).await;

    std::fs::write(scratch.path.join("sub/new.txt"), b"data").unwrap();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(n, t): &(String, String)| n == "sub/new.txt" && t == "EVENT_TYPE_WRITE")
    {
        let (_, msg) = stream.next_within(5).await.unwrap();
        if let Some(fs) = msg.get("filesystem") {
            if fs["type"] == "EVENT_TYPE_CREATE" {
                assert_eq!(fs["entry"]["name"], "new.txt", "{fs}");
            }
            seen.push((
                fs["name"].as_str().unwrap().to_string(),
                fs["type"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(
        seen.contains(&("sub/new.txt".to_string(), "EVENT_TYPE_CREATE".to_string())),
        "{seen:?}"
    );

    let before = std::time::Instant::now();
    loop {
        let (_, msg) = stream.next_within(5).await.unwrap();
        if msg.get("keepalive").is_some() {
            break;
        }
    }
    assert!(
        before.elapsed() <= Duration::from_millis(2500),
        "keepalive at the asked interval"
    );

    drop(stream);
    wait_for_inotify_fds(&envd, baseline).await;
}

#[tokio::test]
async fn watch_dir_on_a_missing_path_ends_with_not_found() {
    let Some(_user) = test_user() else { return };
    let envd = Envd::start(None, "user");
    let mut stream = envd
        .open_stream("WatchDir", json!({"path": "/definitely/not/here"}), &[])
        .await;
    let (flags, end) = stream.next_within(5).await.unwrap();
    assert_eq!(flags & 0x02, 0x02, "end-of-stream envelope");
    assert_eq!(end["error"]["code"], "not_found");
}

#[tokio::test]
async fn polling_watchers_buffer_events_until_asked() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(None, "user");
    let scratch = HomeScratch::new(&user, "poll");
    std::fs::create_dir_all(&scratch.path).unwrap();
    let baseline = inotify_fds(&envd);

    let (status, created) = envd
        .rpc("CreateWatcher", json!({"path": scratch.rel()}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["watcherId"].as_str().unwrap().to_string();
    assert_eq!(inotify_fds(&envd), baseline + 1);

    std::fs::write(scratch.path.join("f.txt"), b"x").unwrap();
    std::fs::remove_file(scratch.path.join("f.txt")).unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        let (status, got) = envd
            .rpc("GetWatcherEvents", json!({"watcherId": id}), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        events.extend(got["events"].as_array().cloned().unwrap_or_default());
        if events.iter().any(|e| e["type"] == "EVENT_TYPE_REMOVE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"EVENT_TYPE_CREATE"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"EVENT_TYPE_REMOVE"), "{events:?}");
    assert!(events.iter().all(|e| e["name"] == "f.txt"));

    let (status, _) = envd
        .rpc("RemoveWatcher", json!({"watcherId": id}), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_for_inotify_fds(&envd, baseline).await;
    let (status, gone) = envd
        .rpc("GetWatcherEvents", json!({"watcherId": id}), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["code"], "not_found");
}

#[tokio::test]
async fn connect_calls_need_the_token() {
    let Some(_user) = test_user() else { return };
    let envd = Envd::start(Some("right"), "user");
    let (status, _, _) = envd_fs_support::send(
        http::Method::POST,
        &envd.url("/filesystem.Filesystem/Stat"),
        &[("content-type".into(), "application/json".into())],
        br#"{"path":"/"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn move_crosses_filesystems_like_mv() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(None, "user");
    let scratch = HomeScratch::new(&user, "xdev");
    std::fs::create_dir_all(scratch.path.join("tree/inner")).unwrap();
    std::fs::write(scratch.path.join("tree/inner/f.txt"), b"payload").unwrap();
    std::os::unix::fs::symlink("inner/f.txt", scratch.path.join("tree/link")).unwrap();
    std::os::unix::fs::lchown(
        scratch.path.join("tree/inner/f.txt"),
        Some(user.uid),
        Some(user.gid),
    )
    .unwrap();
    let mount_base = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(mount_base.path(), "4m");

    let destination = disk.dir.join("moved");
    let (status, moved) = envd
        .rpc(
            "Move",
            json!({"source": format!("{}/tree", scratch.rel()), "destination": destination.to_str().unwrap()}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert!(!scratch.path.join("tree").exists(), "the source is gone");
    assert_eq!(
        std::fs::read(destination.join("inner/f.txt")).unwrap(),
        b"payload"
    );
    assert_eq!(
        std::fs::metadata(destination.join("inner/f.txt"))
            .unwrap()
            .uid(),
        user.uid
    );
    assert_eq!(
        std::fs::read_link(destination.join("link")).unwrap(),
        std::path::Path::new("inner/f.txt")
    );

    drop(disk);
    assert!(!mounted_under(mount_base.path()));
}

/// Metadata set out of band (as `setfattr -n user.e2b.<key>` would) shows in
/// every EntryInfo: Stat, ListDir, Move (within and across filesystems, where
/// it has to be copied) and watch events with entries.
#[tokio::test]
async fn metadata_shows_in_entries_and_survives_moves() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(None, "user");
    let scratch = HomeScratch::new(&user, "fsmeta");
    std::fs::create_dir_all(scratch.path.join("dir")).unwrap();
    let file = scratch.path.join("dir/f.txt");
    std::fs::write(&file, b"x").unwrap();
    xattr::set(&file, "user.e2b.stage", b"raw").unwrap();
    xattr::set(&file, "user.unrelated", b"not reported").unwrap();
    xattr::set(scratch.path.join("dir"), "user.e2b.kind", b"folder").unwrap();
    let rel = scratch.rel();

    let (status, stat) = envd
        .rpc("Stat", json!({"path": format!("{rel}/dir/f.txt")}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stat}");
    assert_eq!(stat["entry"]["metadata"], json!({"stage": "raw"}));

    let (_, listed) = envd
        .rpc("ListDir", json!({"path": rel.clone(), "depth": 2}), None)
        .await;
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries[0]["name"], "dir");
    assert_eq!(entries[0]["metadata"], json!({"kind": "folder"}));
    assert_eq!(entries[1]["name"], "f.txt");
    assert_eq!(entries[1]["metadata"], json!({"stage": "raw"}));

    // A symlink's entry describes its target, metadata included.
    std::os::unix::fs::symlink("dir/f.txt", scratch.path.join("link")).unwrap();
    let (_, stat) = envd
        .rpc("Stat", json!({"path": format!("{rel}/link")}), None)
        .await;
    assert_eq!(stat["entry"]["metadata"], json!({"stage": "raw"}));

    let (status, moved) = envd
        .rpc(
            "Move",
            json!({"source": format!("{rel}/dir/f.txt"), "destination": format!("{rel}/g.txt")}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["entry"]["metadata"], json!({"stage": "raw"}));

    // Across filesystems the attributes are copied, and a replaced file's own
    // metadata does not survive.
    let mount_base = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(mount_base.path(), "4m");
    let destination = disk.dir.join("g.txt");
    std::fs::write(&destination, b"old").unwrap();
    xattr::set(&destination, "user.e2b.stale", b"yes").unwrap();
    let (status, moved) = envd
        .rpc(
            "Move",
            json!({"source": format!("{rel}/g.txt"), "destination": destination.to_str().unwrap()}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["entry"]["metadata"], json!({"stage": "raw"}));
    assert_eq!(
        xattr::get(&destination, "user.unrelated")
            .unwrap()
            .as_deref(),
        Some(&b"not reported"[..]),
        "other user.* attributes move along too, as with mv"
    );
    let (status, moved) = envd
        .rpc(
            "Move",
            json!({"source": format!("{rel}/dir"), "destination": disk.dir.join("dir").to_str().unwrap()}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["entry"]["metadata"], json!({"kind": "folder"}));

    // Watch events carrying entries carry the metadata.
    let mut stream = envd
        .open_stream(
            "WatchDir",
            json!({"path": disk.dir.to_str().unwrap(), "includeEntry": true}),
            &[],
        )
        .await;
    assert_eq!(stream.next_within(5).await.unwrap().1, json!({"start": {}}));
    std::fs::write(&destination, b"changed").unwrap();
    loop {
        let (_, msg) = stream.next_within(5).await.unwrap();
        let Some(event) = msg.get("filesystem") else {
            continue;
        };
        if event["name"] == "g.txt" && event["type"] == "EVENT_TYPE_WRITE" {
            assert_eq!(
                event["entry"]["metadata"],
                json!({"stage": "raw"}),
                "{event}"
            );
            break;
        }
    }
    drop(stream);

    drop(disk);
    assert!(!mounted_under(mount_base.path()));
}
