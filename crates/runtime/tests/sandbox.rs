//! Sandboxes from the `base` template, run as root: what a user sees inside,
//! isolation from the host, limits, and teardown without leaks.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sandbar_runtime::{Catalog, DialError, RuntimeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_is_a_small_debian_machine_of_its_own() {
    let t = runtime("basic").await;
    let rt = &t.rt;
    let info = rt.create(spec("basic1")).await.expect("create");
    assert_eq!(info.template, "base");
    let pid1 = rt.init_pid("basic1").unwrap();

    let out = exec(rt, "basic1", "user", "cat /proc/1/cmdline | tr '\\0' ' '; echo; whoami; pwd; ls -A /home/user; echo $SANDBAR_TEST", 10_000).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("/usr/bin/envd") || lines[0].starts_with("envd"),
        "PID 1 is envd: {lines:?}"
    );
    assert_eq!(
        &lines[1..],
        [
            "user",
            "/home/user",
            ".bash_logout",
            ".bashrc",
            ".profile",
            "yes"
        ],
        "{out:?}"
    );

    // Root inside is uid 0 there, and the host sees uid_base.
    let out = exec(rt, "basic1", "root", "id -u; sudo -n -u user id -un; python --version; node --version; git --version | cut -d' ' -f1-2", 10_000).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "user", "sudo works inside");
    assert!(lines[2].starts_with("Python 3.11"), "{lines:?}");
    assert!(lines[3].starts_with('v'), "{lines:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == UID_BASE.to_string()),
        "host sees {uid_line}"
    );
    // Root inside has the default container capabilities (hardening.rs
    // checks them in detail).
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(
        cap_eff.ends_with(&format!(
            "{:016x}",
            sandbar_runtime::privileges::sandbox_cap_mask()
        )),
        "{cap_eff}"
    );

    // sudo as the default user works (no no_new_privs).
    let out = exec(rt, "basic1", "user", "sudo -n id -u", 10_000).await;
    assert_eq!((out.exit_code, out.stdout.trim()), (0, "0"), "{out:?}");

    // Only the sandbox's own processes are visible.
    let out = exec(
        rt,
        "basic1",
        "root",
        "ps -e -o pid=,comm= | sort -n",
        10_000,
    )
    .await;
    let procs: Vec<&str> = out.stdout.lines().collect();
    assert!(procs.len() <= 5, "ps shows host processes? {procs:?}");
    assert!(procs[0].trim().starts_with("1 envd"), "{procs:?}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid1}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap(),
        "own pid namespace"
    );

    // Root inside cannot mount, make user namespaces, load modules, or set the clock.
    let out = exec(
        rt,
        "basic1",
        "root",
        "mount -t tmpfs x /mnt; echo rc=$?",
        10_000,
    )
    .await;
    assert!(
        out.stdout.contains("rc=32") || out.stdout.contains("rc=1"),
        "mount must fail: {out:?}"
    );
    assert!(
        !std::fs::read_to_string(format!("/proc/{pid1}/mounts"))
            .unwrap()
            .contains("/mnt"),
        "no tmpfs on /mnt"
    );
    let out = exec(
        rt,
        "basic1",
        "root",
        "unshare -U true; echo rc=$?; unshare -m true; echo rc=$?",
        10_000,
    )
    .await;
    assert!(
        out.stdout.starts_with("rc=1"),
        "unshare -U must fail: {out:?}"
    );
    let py = r#"import ctypes, os
l = ctypes.CDLL(None, use_errno=True)
for name, nr in [("finit_module", 313), ("kexec_load", 246), ("bpf", 321), ("keyctl", 250), ("perf_event_open", 298), ("reboot", 169)]:
    r = l.syscall(nr, 0, 0, 0, 0, 0)
    print(name, r, os.strerror(ctypes.get_errno()))"#;
    let out = exec(
        rt,
        "basic1",
        "root",
        &format!("python3 - <<'EOF'\n{py}\nEOF"),
        10_000,
    )
    .await;
    for line in out.stdout.lines() {
        assert!(
            line.ends_with("-1 Operation not permitted"),
            "{line} ({out:?})"
        );
    }
    assert_eq!(out.stdout.lines().count(), 6, "{out:?}");
    let out = exec(rt, "basic1", "root", "date -s '2001-01-01' >/dev/null 2>&1; echo rc=$?; cat /proc/kcore >/dev/null 2>&1; echo rc=$?; echo 1 > /proc/sys/kernel/sysrq; echo rc=$?", 10_000).await;
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["rc=1", "rc=1", "rc=1"],
        "{out:?}"
    );
    // Writes land in the sandbox's own layer; the template stays untouched.
    let out = exec(
        rt,
        "basic1",
        "root",
        "echo hi > /etc/sandbar-test && cat /etc/sandbar-test && hostname",
        10_000,
    )
    .await;
    assert_eq!(out.stdout, "hi\nsandbox\n", "{out:?}");
    assert!(!std::path::Path::new(TEMPLATES)
        .join("base/rootfs/etc/sandbar-test")
        .exists());
    assert!(!std::path::Path::new(TEMPLATES)
        .join("base/rootfs/run/sandbar-init.json")
        .exists());
    let out = exec(
        rt,
        "basic1",
        "root",
        "ls /run/sandbar-init.json 2>&1; ls -l /dev | wc -l",
        10_000,
    )
    .await;
    assert!(
        out.stdout.contains("No such file"),
        "the init file is removed once envd is ready: {out:?}"
    );

    // Disk use counts what was written (once the store commits it).
    exec(
        rt,
        "basic1",
        "root",
        "head -c 3000000 /dev/urandom > /root/blob && sync",
        10_000,
    )
    .await;
    let m = rt.metrics("basic1").unwrap();
    assert!(m.mem_used > 0 && m.mem_total == 256 << 20, "{m:?}");
    assert!(
        m.disk_total == 256 << 20 && m.disk_used >= 3_000_000,
        "{m:?}"
    );

    let cg = rt.cgroup("basic1").unwrap();
    assert!(rt.kill("basic1").await.unwrap());
    assert!(!rt.kill("basic1").await.unwrap(), "kill is idempotent");
    assert!(cg.dirs().iter().all(|d| !d.exists()), "cgroups removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid1}")).exists(),
        "init reaped"
    );
    assert!(
        !t.data.path().join("sandboxes/basic1").exists(),
        "dir removed"
    );
    assert!(matches!(
        rt.dial("basic1", 49983).await,
        Err(DialError::NotFound)
    ));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_reports_closed_ports_and_unknown_sandboxes() {
    let t = runtime("dial").await;
    let rt = &t.rt;
    rt.create(spec("dial1")).await.unwrap();
    assert!(matches!(
        rt.dial("dial1", 4444).await,
        Err(DialError::PortClosed(4444))
    ));
    assert!(matches!(
        rt.dial("nope", 4444).await,
        Err(DialError::NotFound)
    ));
    // A server bound to loopback only inside is reached.
    let out = exec(rt, "dial1", "user", "nohup python3 -m http.server 3000 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 0.7; echo started", 10_000).await;
    assert_eq!(out.stdout.trim(), "started");
    let mut stream = rt.dial("dial1", 3000).await.expect("dial 3000");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.contains(".bashrc"), "{body}");
    assert!(rt.lookup("dial1").is_some() && rt.lookup("nope").is_none());
    rt.shutdown().await;
    assert!(cgroup_children(&t.instance).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_inside_its_sandbox_only() {
    let t = runtime("oom").await;
    let rt = &t.rt;
    let mut s = spec("oom1");
    s.memory_mb = 64;
    rt.create(s).await.unwrap();
    rt.create(spec("oom2")).await.unwrap();
    let out = exec(
        rt,
        "oom1",
        "user",
        "python3 -c 'b = bytearray(400 * 1024 * 1024); print(len(b))'",
        30_000,
    )
    .await;
    assert_ne!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(rt.cgroup("oom1").unwrap().oom_kills() >= 1);
    // envd and the neighbour live on.
    assert_eq!(
        exec(rt, "oom1", "user", "echo alive", 10_000).await.stdout,
        "alive\n"
    );
    assert_eq!(
        exec(rt, "oom2", "user", "echo alive", 10_000).await.stdout,
        "alive\n"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let t = runtime_with(
        "fork",
        sandbar_runtime::RuntimeOptions {
            pids_max: 200,
            ..options()
        },
    )
    .await;
    let rt = &t.rt;
    rt.create(spec("fork1")).await.unwrap();
    let cg = rt.cgroup("fork1").unwrap();
    let bomb = exec(
        rt,
        "fork1",
        "user",
        "bomb() { bomb | bomb & }; bomb; sleep 3",
        4_000,
    );
    let probe = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        for _ in 0..10 {
            std::process::Command::new("/bin/true").status().unwrap();
        }
        started.elapsed()
    };
    let (_, host_latency) = tokio::join!(bomb, probe);
    assert!(
        host_latency < Duration::from_secs(2),
        "host stays responsive: 10 spawns took {host_latency:?}"
    );
    let pids_dir = cg
        .dirs()
        .iter()
        .find(|d| d.join("pids.max").exists())
        .unwrap()
        .clone();
    let events = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap();
    let hits: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hits > 0, "the pids limit was hit: {events}");
    assert!(rt.kill("fork1").await.unwrap());
    assert!(!pids_dir.exists());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creates_are_undone() {
    let t = runtime("fail").await;
    let rt = &t.rt;
    let mut s = spec("fail1");
    s.template = "no-such-template".into();
    assert!(matches!(
        rt.create(s).await,
        Err(RuntimeError::TemplateNotFound(_))
    ));
    rt.create(spec("fail2")).await.unwrap();
    assert!(matches!(
        rt.create(spec("fail2")).await,
        Err(RuntimeError::AlreadyExists(_))
    ));
    assert!(rt.create(spec("../x")).await.is_err());
    rt.kill("fail2").await.unwrap();

    // envd that exits at once: create fails with its log, and leaves nothing.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(&instance("fail-b"), data.path());
    cfg.envd_bin = "/bin/false".into();
    let bad = sandbar_runtime::Runtime::start_with(cfg.clone(), None, options())
        .await
        .unwrap();
    let err = bad.create(spec("fail3")).await.unwrap_err();
    assert!(
        err.to_string().contains("envd exited before it was ready"),
        "{err}"
    );
    assert!(cgroup_children(&cfg.instance).is_empty());
    assert!(std::fs::read_dir(data.path().join("sandboxes"))
        .unwrap()
        .next()
        .is_none());
    bad.shutdown().await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_kill_cycles_leave_nothing_behind() {
    let t = runtime("cycle").await;
    let rt = &t.rt;
    let data = t.data.path().to_string_lossy().into_owned();
    let cycles: usize = std::env::var("SANDBAR_TEST_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let started = Instant::now();
    let mut pids = Vec::new();
    for i in 0..cycles {
        let id = format!("cyc{i}");
        rt.create(spec(&id)).await.unwrap();
        pids.push(rt.init_pid(&id).unwrap());
        assert!(rt.kill(&id).await.unwrap());
    }
    let per = started.elapsed() / cycles as u32;
    eprintln!("{cycles} create/kill cycles, {per:?} each");
    // Sandbox mounts live in the sandboxes' own mount namespaces only (the
    // one host mount is the layer store's).
    assert_eq!(
        mounts_mentioning(&data) - mounts_mentioning(&format!("{data}/store")),
        0,
        "no host mount of a sandbox"
    );
    assert_eq!(
        mounts_mentioning(TEMPLATES),
        0,
        "no host mount of the template"
    );
    assert!(cgroup_children(&t.instance).is_empty());
    // Every init is gone (a reused pid would not be in a sandbar cgroup).
    assert!(pids
        .iter()
        .all(|p| !std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            .unwrap_or_default()
            .contains(&format!("sandbar-{}", t.instance))));
    assert!(std::fs::read_dir(t.data.path().join("sandboxes"))
        .unwrap()
        .next()
        .is_none());
    rt.shutdown().await;
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory/sandbar-{}", t.instance)).exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_succeed() {
    let t = runtime("conc").await;
    let rt = &t.rt;
    let started = Instant::now();
    let creates = (0..50).map(|i| {
        let rt = rt.clone();
        async move {
            let s = Instant::now();
            rt.create(spec(&format!("conc{i}")))
                .await
                .map(|_| s.elapsed())
        }
    });
    let results = futures::future::join_all(creates).await;
    let mut times: Vec<Duration> = results
        .into_iter()
        .map(|r| r.expect("every create succeeds"))
        .collect();
    times.sort();
    eprintln!(
        "50 concurrent creates in {:?}: p50 {:?} p99 {:?}",
        started.elapsed(),
        times[25],
        times[49]
    );
    assert_eq!(rt.list().len(), 50);
    assert_eq!(
        exec(rt, "conc49", "user", "echo ok", 10_000).await.stdout,
        "ok\n"
    );
    rt.shutdown().await;
    // Shutdown pauses them down to their files; nothing runs any more.
    assert!(
        rt.list()
            .iter()
            .all(|s| s.state
                == sandbar_runtime::State::Paused(sandbar_runtime::PauseMode::Filesystem))
    );
    assert_eq!(rt.list().len(), 50);
    assert!(cgroup_children(&t.instance).is_empty());
}

/// Not a test by itself: the child half of `a_crashed_runtime_is_cleaned_up_by_the_next`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn crash_child() {
    let Ok(instance) = std::env::var("SANDBAR_CRASH_INSTANCE") else {
        return;
    };
    let data = std::env::var("SANDBAR_CRASH_DATA").unwrap();
    let rt = sandbar_runtime::Runtime::start_with(
        config(&instance, std::path::Path::new(&data)),
        None,
        options(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        let id = format!("crash{i}");
        rt.create(spec(&id)).await.unwrap();
        let out = exec(
            &rt,
            &id,
            "root",
            "echo kept > /root/written-before-the-crash && sync",
            10_000,
        )
        .await;
        assert_eq!(out.exit_code, 0, "{out:?}");
        println!("PID {}", rt.init_pid(&id).unwrap());
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runtime_is_cleaned_up_by_the_next() {
    use std::io::BufRead;
    let instance = instance("crash");
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env("SANDBAR_CRASH_INSTANCE", &instance)
        .env("SANDBAR_CRASH_DATA", data.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("PID ") {
            pids.push(p.parse::<i32>().unwrap());
        }
        if line == "READY" {
            break;
        }
    }
    assert_eq!(pids.len(), 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut left: Vec<_> = cgroup_children(&instance)
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    left.sort();
    left.dedup();
    assert_eq!(
        left.len(),
        3,
        "the dead runtime left its sandboxes: {left:?}"
    );
    assert!(pids
        .iter()
        .all(|p| std::path::Path::new(&format!("/proc/{p}")).exists()));

    let rt = sandbar_runtime::Runtime::start_with(config(&instance, data.path()), None, options())
        .await
        .unwrap();
    assert!(
        cgroup_children(&instance).is_empty(),
        "cgroups of the dead runtime removed"
    );
    for p in &pids {
        // Orphans are reaped by the host's init; a zombie has no cgroup any more.
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "pid {p} survived: {status}"
        );
    }
    // Their files are not lost: they are paused, and resume on them.
    let held = rt.list();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(
        held.iter()
            .all(|s| s.state
                == sandbar_runtime::State::Paused(sandbar_runtime::PauseMode::Filesystem))
    );
    rt.resume("crash0")
        .await
        .expect("a recovered sandbox resumes");
    assert_eq!(
        exec(
            &rt,
            "crash0",
            "root",
            "cat /root/written-before-the-crash",
            10_000
        )
        .await
        .stdout,
        "kept\n"
    );
    for i in 0..3 {
        assert!(rt.kill(&format!("crash{i}")).await.unwrap());
    }
    assert!(
        std::fs::read_dir(data.path().join("sandboxes"))
            .unwrap()
            .next()
            .is_none(),
        "killed sandboxes' dirs removed"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_is_handed_over_with_the_callers_settings_and_replaced() {
    let warm = sandbar_runtime::WarmSpec {
        template: "base".into(),
        count: 1,
        cpu_count: 1,
        memory_mb: 256,
        disk_mb: 256,
    };
    let t = runtime_with(
        "warm",
        sandbar_runtime::RuntimeOptions {
            warm: vec![warm],
            ..options()
        },
    )
    .await;
    let rt = &t.rt;
    let warm_dirs = || -> Vec<String> {
        std::fs::read_dir(t.data.path().join("sandboxes"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("warm-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let wait_for_one_warm = |before: Option<String>| async move {
        for _ in 0..200 {
            let fresh: Vec<String> = warm_dirs()
                .into_iter()
                .filter(|d| Some(d) != before.as_ref())
                .collect();
            if fresh.len() == 1 && rt.warm_ready("base") == 1 {
                return fresh[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no warm sandbox got ready: {:?}", warm_dirs());
    };
    let first = wait_for_one_warm(None).await;
    // Warm sandboxes are nobody's: not listed, not reachable.
    assert!(rt.list().is_empty());

    // Other resources than the warm one booted with: they are the caller's.
    let mut s = spec("warm1");
    s.envd_access_token = Some("tok".into());
    s.env_vars.insert("HANDED".into(), "over".into());
    s.memory_mb = 384;
    s.disk_mb = 512;
    let info = rt.create(s).await.expect("create");
    assert_eq!((info.memory_mb, info.disk_mb), (384, 512));
    // It was the warm one (its directory now has the caller's id, its
    // cgroup keeps the warm name; a hand-over that failed would have
    // booted a new sandbox, cgroup "warm1") ...
    assert!(t.data.path().join("sandboxes").join("warm1").exists());
    assert!(!t.data.path().join("sandboxes").join(&first).exists());
    let cgroups: Vec<String> = cgroup_children(&t.instance)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    assert!(cgroups.contains(&first), "{cgroups:?}");
    assert!(!cgroups.iter().any(|c| c == "warm1"), "{cgroups:?}");
    // ... and a new one is being made in its place.
    let second = wait_for_one_warm(Some(first.clone())).await;
    assert_ne!(first, second);

    // envd took the caller's token and env vars.
    let envs = |token: Option<&'static str>| async move {
        let stream = rt.dial("warm1", 49983).await.expect("dial envd");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get("/envs").header("host", "envd");
        if let Some(t) = token {
            req = req.header("x-access-token", t);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    assert_eq!(envs(None).await.0, 401);
    let (status, body) = envs(Some("tok")).await;
    assert_eq!(status, 200);
    let vars: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(vars["HANDED"], "over", "{vars}");

    // The cgroup's limit is the caller's (reported as the lower of the
    // two), and so is the disk quota: 450 MiB fit in 512, not in 256
    // (fallocate: the quota counts it at once, writes only when flushed).
    let m = rt.metrics("warm1").expect("metrics");
    assert_eq!(m.mem_total, 384 << 20, "memory limit: {m:?}");
    let out = exec_with_token(
        rt,
        "warm1",
        "root",
        "fallocate -l 450M /root/big && stat -c %s /root/big",
        30_000,
        Some("tok"),
    )
    .await;
    assert_eq!(out.stdout.trim(), (450u64 << 20).to_string(), "{out:?}");

    assert!(rt.kill("warm1").await.unwrap());
    rt.shutdown().await;
    assert!(
        warm_dirs().is_empty(),
        "warm sandboxes left: {:?}",
        warm_dirs()
    );
}
