//! The layer store on a real btrfs image (root: loop devices and mounts).

use std::collections::HashSet;
use std::io::Write;

use sandbar_layers::{LayerStore, StoreConfig};

fn open(dir: &std::path::Path) -> LayerStore {
    LayerStore::open(&StoreConfig {
        data_dir: dir.to_path_buf(),
        size_bytes: Some(1 << 30),
    })
    .expect("the layer store opens")
}

fn mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn loop_devices_of(image: &std::path::Path) -> usize {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|f| f.trim() == image.to_str().unwrap())
        })
        .count()
}

#[test]
fn writable_layers_are_limited_committed_stacked_and_collected() {
    let d = tempfile::Builder::new()
        .prefix("sandbar-layers-")
        .tempdir()
        .unwrap();
    let store = open(d.path());
    let root = store.root().to_path_buf();
    assert!(mounted(&root));
    assert_eq!(loop_devices_of(&d.path().join("store.btrfs")), 1);

    // The quota is a hard limit: writes past it fail, the rest of the store is unaffected.
    let w = store.create_writable("sb1", 32).unwrap();
    let mut f = std::fs::File::create(w.upper().join("big")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0;
    let err = loop {
        match f.write_all(&chunk).and_then(|_| f.sync_data()) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 64, "wrote {written} MiB into a 32 MiB layer");
    };
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    assert!(
        (24..=32).contains(&written),
        "{written} MiB before the limit"
    );
    drop(f);
    let used = store.used_bytes(&w).unwrap();
    assert!((24 << 20..=33 << 20).contains(&used), "{used}");
    std::fs::write(w.upper().join("note"), "hello").unwrap_or(());

    // A commit is a read-only layer that keeps what was there.
    std::fs::remove_file(w.upper().join("big")).unwrap();
    std::fs::write(w.upper().join("note"), "hello").unwrap();
    let l1 = store.commit(&w, None, "base").unwrap();
    std::fs::write(w.upper().join("note"), "changed later").unwrap();
    assert_eq!(
        std::fs::read_to_string(l1.upper().join("note")).unwrap(),
        "hello"
    );
    assert!(
        std::fs::write(l1.upper().join("x"), "no").is_err(),
        "layers are read-only"
    );

    // Layers stack on their parents.
    let w2 = store.create_writable("sb2", 32).unwrap();
    let l2 = store.commit(&w2, Some(&l1.meta.id), "base").unwrap();
    let stack: Vec<String> = store
        .stack(&l2.meta.id)
        .unwrap()
        .into_iter()
        .map(|l| l.meta.id)
        .collect();
    assert_eq!(stack, [l2.meta.id.clone(), l1.meta.id.clone()]);
    assert_eq!(
        store.layer(&l1.meta.id).unwrap().meta.source.as_deref(),
        Some("sb1")
    );
    let mut ids = store.writable_ids();
    ids.sort();
    assert_eq!(ids, ["sb1", "sb2"]);

    // What a sandbox or a snapshot stands on stays; the rest goes.
    let keep_l2: HashSet<String> = [l2.meta.id.clone()].into();
    assert!(
        store.collect(&HashSet::new(), &keep_l2).is_empty(),
        "l1 is under l2"
    );
    let removed = store.collect(&HashSet::new(), &HashSet::new());
    assert_eq!(removed.len(), 2);
    assert!(store.layer_ids().is_empty());

    store.remove_writable("sb1").unwrap();
    store.remove_writable("sb2").unwrap();
    store.remove_writable("sb2").unwrap();
    assert!(store.writable_ids().is_empty());
    assert!(store.create_writable("../x", 1).is_err());

    // Closing unmounts it and frees the loop device; reopening finds the data.
    let w3 = store.create_writable("sb3", 8).unwrap();
    std::fs::write(w3.upper().join("kept"), "across a close").unwrap();
    store.close();
    assert!(!mounted(&root));
    assert_eq!(loop_devices_of(&d.path().join("store.btrfs")), 0);
    let store = open(d.path());
    assert_eq!(
        std::fs::read_to_string(store.writable("sb3").unwrap().upper().join("kept")).unwrap(),
        "across a close"
    );
    store.remove_writable("sb3").unwrap();
    store.close();
    assert!(!mounted(&root));
}

#[test]
fn process_images_live_beside_sandboxes_and_layers_and_go_with_them() {
    let d = tempfile::Builder::new()
        .prefix("sandbar-layers-")
        .tempdir()
        .unwrap();
    let store = open(d.path());
    let w = store.create_writable("sb1", 32).unwrap();
    assert!(store.checkpoint("sb1").is_none());

    // A sandbox's images: made empty (an old set goes first), listed, removed.
    let dir = store.create_checkpoint("sb1").unwrap();
    std::fs::write(dir.join("pages-1.img"), "old").unwrap();
    let dir = store.create_checkpoint("sb1").unwrap();
    assert!(!dir.join("pages-1.img").exists(), "a fresh set");
    std::fs::write(dir.join("pages-1.img"), "memory").unwrap();
    assert_eq!(store.checkpoint("sb1"), Some(dir.clone()));
    assert_eq!(store.checkpoint_ids(), ["sb1"]);
    assert!(store.create_checkpoint("../x").is_err());

    // A snapshot of a checkpointed sandbox links its images (both keep them).
    let l1 = store.commit(&w, None, "base").unwrap();
    assert!(l1.memory().is_none(), "files only");
    store.link_memory(&l1.meta.id, "sb1").unwrap();
    let l1 = store.layer(&l1.meta.id).unwrap();
    let mem = l1.memory().expect("the layer has images");
    assert_eq!(
        std::fs::read_to_string(mem.join("pages-1.img")).unwrap(),
        "memory"
    );
    assert!(store.link_memory(&l1.meta.id, "sb1").is_err(), "only once");
    store.remove_checkpoint("sb1").unwrap();
    store.remove_checkpoint("sb1").unwrap();
    assert!(store.checkpoint("sb1").is_none());
    assert!(mem.join("pages-1.img").exists(), "the layer's copy stays");

    // Images dumped under a scratch name move to the layer taken with them.
    let scratch = store.create_checkpoint("snap-1").unwrap();
    std::fs::write(scratch.join("core-1.img"), "core").unwrap();
    let l2 = store.commit(&w, Some(&l1.meta.id), "base").unwrap();
    store.attach_memory(&l2.meta.id, "snap-1").unwrap();
    assert!(store.checkpoint_ids().is_empty(), "moved, not copied");
    assert!(store.attach_memory("nosuchlayer", "sb1").is_err());
    let mem2 = store.layer(&l2.meta.id).unwrap().memory().unwrap();

    // They go with their layers.
    let removed = store.collect(&HashSet::new(), &HashSet::new());
    assert_eq!(removed.len(), 2);
    assert!(!mem.exists() && !mem2.exists());
    store.remove_writable("sb1").unwrap();
    store.close();
}
