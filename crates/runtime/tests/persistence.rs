//! Sandboxes that last: the writable layer on disk with its quota, pause in
//! both modes, snapshots, and what survives a restart of the runtime.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use sandbar_runtime::{PauseMode, Runtime, State};

async fn boot_id(rt: &Runtime, id: &str) -> String {
    let out = exec(
        rt,
        id,
        "user",
        "cat /proc/sys/kernel/random/boot_id",
        10_000,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    out.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_on_disk_with_a_hard_quota_and_cost_no_memory() {
    let t = runtime("disk").await;
    let rt = &t.rt;
    let mut s = spec("disk1");
    s.disk_mb = 300;
    s.memory_mb = 256;
    rt.create(s).await.expect("create");
    // Past the quota: EDQUOT inside, the sandbox lives on.
    let out = exec(
        rt,
        "disk1",
        "user",
        "dd if=/dev/zero of=/home/user/big bs=1M count=400 conv=fsync 2>&1 | grep -v records; echo rc=${PIPESTATUS[0]}",
        60_000,
    )
    .await;
    assert!(out.stdout.contains("Disk quota exceeded"), "{out:?}");
    assert!(out.stdout.contains("rc=1"), "{out:?}");
    assert_eq!(
        exec(
            rt,
            "disk1",
            "user",
            "rm /home/user/big && echo alive",
            10_000
        )
        .await
        .stdout,
        "alive\n"
    );
    let m = rt.metrics("disk1").unwrap();
    assert_eq!(m.disk_total, 300 << 20);

    // Writing more than the memory limit to disk: no OOM, and the working
    // set (page cache aside) stays small.
    let cg = rt.cgroup("disk1").unwrap();
    let before = cg.usage().unwrap();
    let out = exec(
        rt,
        "disk1",
        "user",
        "dd if=/dev/zero of=/home/user/f bs=1M count=280 2>&1 | tail -1; sync; echo rc=${PIPESTATUS[0]}",
        120_000,
    )
    .await;
    assert!(out.stdout.contains("rc=0"), "{out:?}");
    let after = cg.usage().unwrap();
    assert_eq!(cg.oom_kills(), 0, "writing files OOM-killed something");
    assert!(
        after.mem_used < before.mem_used + (64 << 20),
        "the working set grew by {} MiB",
        (after.mem_used.saturating_sub(before.mem_used)) >> 20
    );
    assert!(rt.kill("disk1").await.unwrap());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pause_freezes_in_place_and_resumes_the_same_boot() {
    let t = runtime("pfull").await;
    let rt = &t.rt;
    rt.create(spec("pf1")).await.expect("create");
    let boot = boot_id(rt, "pf1").await;
    exec(
        rt,
        "pf1",
        "user",
        "nohup bash -c 'while :; do date +%s%N >> /home/user/ticks; sleep 0.05; done' >/dev/null 2>&1 &",
        5_000,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid1 = rt.init_pid("pf1").unwrap();

    rt.pause("pf1", PauseMode::Full).await.expect("pause");
    assert_eq!(rt.state("pf1"), Some(State::Paused(PauseMode::Full)));
    let ticks = rt.cgroup("pf1").unwrap().dirs().to_vec();
    let frozen = ticks.iter().any(|d| {
        std::fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            || std::fs::read_to_string(d.join("cgroup.events"))
                .is_ok_and(|s| s.contains("frozen 1"))
    });
    assert!(frozen, "the sandbox's cgroup is frozen");
    assert!(matches!(
        rt.pause("pf1", PauseMode::Full).await,
        Err(sandbar_runtime::RuntimeError::Lifecycle(
            sandbar_runtime::LifecycleError::AlreadyPaused(_)
        ))
    ));
    let upper = t
        .data
        .path()
        .join("store/writable/pf1/upper/home/user/ticks");
    let n_paused = std::fs::read_to_string(&upper).unwrap().lines().count();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        std::fs::read_to_string(&upper).unwrap().lines().count(),
        n_paused,
        "nothing ran while paused"
    );

    rt.resume("pf1").await.expect("resume");
    assert_eq!(rt.init_pid("pf1"), Some(pid1), "the same processes");
    assert_eq!(boot_id(rt, "pf1").await, boot, "the same boot");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::fs::read_to_string(&upper).unwrap().lines().count() > n_paused,
        "the background process runs on"
    );
    assert!(rt.kill("pf1").await.unwrap());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_pause_keeps_files_and_boots_afresh() {
    let t = runtime("pfs").await;
    let rt = &t.rt;
    rt.create(spec("pfs1")).await.expect("create");
    let boot = boot_id(rt, "pfs1").await;
    exec(
        rt,
        "pfs1",
        "user",
        "echo kept > /home/user/note && nohup sleep 1000 >/dev/null 2>&1 &",
        5_000,
    )
    .await;
    let cg = rt.cgroup("pfs1").unwrap();

    rt.pause("pfs1", PauseMode::Filesystem)
        .await
        .expect("pause");
    assert_eq!(rt.state("pfs1"), Some(State::Paused(PauseMode::Filesystem)));
    assert!(
        cg.dirs().iter().all(|d| !d.exists()),
        "no processes, no cgroup"
    );
    assert!(rt.init_pid("pfs1").is_none());

    rt.resume("pfs1").await.expect("resume");
    assert_ne!(boot_id(rt, "pfs1").await, boot, "a new boot");
    let out = exec(
        rt,
        "pfs1",
        "user",
        "cat /home/user/note; pgrep -c sleep || true",
        10_000,
    )
    .await;
    assert_eq!(
        out.stdout, "kept\n0\n",
        "files kept, processes not: {out:?}"
    );
    assert!(rt.kill("pfs1").await.unwrap());
    assert!(!t.data.path().join("store/writable/pfs1").exists());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_start_independent_sandboxes_and_layers_go_when_unused() {
    let t = runtime("snap").await;
    let rt = &t.rt;
    rt.create(spec("src")).await.expect("create");
    exec(
        rt,
        "src",
        "user",
        "echo v1 > /home/user/f && mkdir -p /home/user/d && echo x > /home/user/d/x",
        5_000,
    )
    .await;
    let snap = rt.snapshot("src", false).await.expect("snapshot");
    assert_eq!(rt.state("src"), Some(State::Running), "the source runs on");
    exec(rt, "src", "user", "echo v2 > /home/user/f", 5_000).await;

    for id in ["c1", "c2"] {
        let mut s = spec(id);
        s.base_layer = Some(snap.layer.clone());
        rt.create(s).await.expect("create from the snapshot");
    }
    let read = |id: &'static str| async move {
        exec(
            rt,
            id,
            "user",
            "cat /home/user/f; cat /home/user/d/x",
            5_000,
        )
        .await
        .stdout
    };
    assert_eq!(read("c1").await, "v1\nx\n");
    exec(
        rt,
        "c1",
        "user",
        "echo mine > /home/user/f && rm -r /home/user/d",
        5_000,
    )
    .await;
    assert_eq!(read("c2").await, "v1\nx\n", "each is independent");
    assert_eq!(
        exec(rt, "src", "user", "cat /home/user/f", 5_000)
            .await
            .stdout,
        "v2\n"
    );
    assert_eq!(
        exec(
            rt,
            "c1",
            "user",
            "cat /home/user/f; ls /home/user/d 2>&1 | head -1",
            5_000
        )
        .await
        .stdout,
        "mine\nls: cannot access '/home/user/d': No such file or directory\n"
    );

    // A snapshot of a snapshot's child stacks on it.
    let snap2 = rt.snapshot("c1", false).await.expect("second snapshot");
    let mut s = spec("c3");
    s.base_layer = Some(snap2.layer.clone());
    rt.create(s).await.unwrap();
    assert_eq!(
        exec(rt, "c3", "user", "cat /home/user/f", 5_000)
            .await
            .stdout,
        "mine\n"
    );

    // The layers stay while a sandbox stands on them, whatever the snapshots.
    assert!(rt.kill("src").await.unwrap());
    assert!(rt.collect_layers(HashSet::new()).await.is_empty());
    assert!(rt.has_layer(&snap.layer));
    for id in ["c1", "c2", "c3"] {
        assert!(rt.kill(id).await.unwrap());
    }
    // A snapshot record keeps its layer (and those under it); then they go.
    let kept: HashSet<String> = [snap.layer.clone()].into();
    assert_eq!(rt.collect_layers(kept).await, vec![snap2.layer.clone()]);
    assert_eq!(
        rt.collect_layers(HashSet::new()).await,
        vec![snap.layer.clone()]
    );
    assert!(!rt.has_layer(&snap.layer));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_pauses_everything_and_the_next_start_resumes_it() {
    let t = runtime("restart").await;
    rt_write_and_stop(&t).await;
    let rt = Runtime::start_with(config(&t.instance, t.data.path()), None, options())
        .await
        .expect("second start");
    let held = rt.list();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held
        .iter()
        .all(|s| s.state == State::Paused(PauseMode::Filesystem)));
    rt.resume("rs1").await.expect("resume after a restart");
    assert_eq!(
        exec(&rt, "rs1", "user", "cat /home/user/survives", 5_000)
            .await
            .stdout,
        "yes\n"
    );
    // The one not resumed is still paused, and can be killed as it is.
    assert!(rt.kill("rs2").await.unwrap());
    assert!(rt.kill("rs1").await.unwrap());
    rt.shutdown().await;
}

async fn rt_write_and_stop(t: &TestRuntime) {
    let rt = &t.rt;
    for id in ["rs1", "rs2"] {
        rt.create(spec(id)).await.expect("create");
        exec(rt, id, "user", "echo yes > /home/user/survives", 5_000).await;
    }
    rt.shutdown().await;
    assert!(rt.list().iter().all(|s| s.state.is_paused()));
}
