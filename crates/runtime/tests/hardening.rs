//! What root inside a sandbox must not be able to do to the host or to other
//! sandboxes: each test here failed before the fix it checks.

mod common;

use common::*;

/// `CapEff` of root inside: Docker's default set, nothing more; and no
/// namespace of any kind can be made inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_has_the_default_capabilities_and_no_namespaces() {
    let t = runtime("caps").await;
    let rt = &t.rt;
    rt.create(spec("caps1")).await.expect("create");
    let mask = format!("{:016x}", sandbar_runtime::privileges::sandbox_cap_mask());

    let pid1 = rt.init_pid("caps1").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with(&mask), "envd {line}, want {mask}");
    }
    let inh = status.lines().find(|l| l.starts_with("CapInh:")).unwrap();
    assert!(inh.ends_with("0000000000000000"), "{inh}");

    let out = exec(
        rt,
        "caps1",
        "root",
        "grep -E '^Cap(Eff|Bnd)' /proc/self/status; sudo -n grep CapEff /proc/self/status; \
         for f in -n -m -p -i -u -C -U -T; do unshare $f true 2>/dev/null; echo \"unshare $f rc=$?\"; done",
        10_000,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].ends_with(&mask) && lines[1].ends_with(&mask),
        "{out:?}"
    );
    assert!(
        lines[2].ends_with(&mask),
        "sudo gains nothing more: {out:?}"
    );
    for l in &lines[3..] {
        assert!(
            l.ends_with("rc=1"),
            "a namespace was made inside: {l} ({out:?})"
        );
    }
    assert_eq!(lines.len(), 11, "{out:?}");

    // What users need of root still works: sudo, chown, ping sockets, low ports.
    let out = exec(
        rt,
        "caps1",
        "user",
        "sudo -n touch /root/x && sudo -n chown user /root/x && sudo -n stat -c %U /root/x && \
         python3 -c 'import socket; s=socket.socket(); s.bind((\"0.0.0.0\", 80)); print(\"port 80\")'",
        10_000,
    )
    .await;
    assert_eq!(out.stdout, "user\nport 80\n", "{out:?}");
    rt.shutdown().await;
}

/// envd's stdout is a pipe to the runtime, not a host file: root inside can
/// take it (pidfd_getfd, /proc/1/fd/1), but all it gets is a capped log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_output_is_a_capped_pipe_not_a_host_file() {
    let t = runtime("logcap").await;
    let rt = &t.rt;
    rt.create(spec("log1")).await.expect("create");
    // What the review did: take envd's stdout with pidfd_getfd and write
    // to it without end.
    let py = r#"import ctypes, os
fd = ctypes.CDLL(None, use_errno=True).syscall(438, os.pidfd_open(1), 1, 0)
print(os.readlink(f"/proc/self/fd/{fd}"), flush=True)
chunk = b"x" * (1 << 20)
for _ in range(8):
    os.write(fd, chunk)
print("wrote 8 MiB", flush=True)"#;
    let out = exec(
        rt,
        "log1",
        "root",
        &format!("python3 - <<'EOF'\n{py}\nEOF"),
        30_000,
    )
    .await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("pipe:["),
        "envd's stdout is a pipe: {out:?}"
    );
    assert_eq!(lines.get(1), Some(&"wrote 8 MiB"), "{out:?}");
    // The reader drains the pipe; give it a moment to catch up.
    let dir = t.data.path().join("sandboxes/log1");
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size("envd.log.1") == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let total = size("envd.log") + size("envd.log.1");
    assert!(size("envd.log.1") > 0, "the log was rotated");
    assert!(total <= 2 << 20, "8 MB written, {total} bytes kept");
    assert!(rt.kill("log1").await.unwrap());
    assert!(!dir.exists(), "the log goes with the sandbox");
    rt.shutdown().await;
}

/// Takes every inotify instance it can, writes how many to /tmp/hog.out,
/// and holds them for `hold_secs`.
fn inotify_hog(hold_secs: u32) -> String {
    format!(
        "python3 - <<'EOF'\nimport ctypes, os, time\nl = ctypes.CDLL(None, use_errno=True)\nfds = []\nwhile True:\n    fd = l.inotify_init1(0)\n    if fd < 0:\n        err = os.strerror(ctypes.get_errno())\n        break\n    fds.append(fd)\nopen('/tmp/hog.out', 'w').write(f'{{len(fds)}} {{err}}')\ntime.sleep({hold_secs})\nEOF"
    )
}

/// Limits the kernel counts per user are charged to each sandbox's own
/// namespace owner: one sandbox using up its inotify instances leaves the
/// other sandboxes and the host theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sandbox_cannot_use_up_a_per_user_kernel_limit() {
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = runtime("ucount").await;
    let rt = &t.rt;
    rt.create(spec("hog")).await.expect("create");
    rt.create(spec("other")).await.expect("create");
    // The hog takes every inotify instance it can and holds them.
    let hog = rt.clone();
    let held =
        tokio::spawn(async move { exec(&hog, "hog", "root", &inotify_hog(20), 25_000).await });
    let mut hog_out = String::new();
    for _ in 0..100 {
        hog_out = exec(rt, "hog", "root", "cat /tmp/hog.out", 5_000)
            .await
            .stdout;
        if !hog_out.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got: usize = hog_out
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(
        hog_out.contains("Too many open files") && got > 0 && got <= max,
        "the hog stops at the per-user limit ({max}): {hog_out}"
    );
    // Another sandbox, and the host, can still make one.
    let out = exec(
        rt,
        "other",
        "root",
        "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)'",
        10_000,
    )
    .await;
    assert_eq!(
        out.stdout.trim(),
        "True",
        "another sandbox was starved: {out:?}"
    );
    // SAFETY: a plain syscall; the fd is closed right after.
    let fd = unsafe { libc::inotify_init1(0) };
    assert!(
        fd >= 0,
        "the host was starved: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    held.abort();
    rt.shutdown().await;
}

/// `/proc/self/mountinfo` inside names no host path: not the template's,
/// not the sandbox's directory, not where the binaries live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mountinfo_shows_no_host_paths() {
    let t = runtime("mntinfo").await;
    let rt = &t.rt;
    rt.create(spec("mi1")).await.expect("create");
    let out = exec(rt, "mi1", "user", "cat /proc/self/mountinfo", 10_000).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let data = t.data.path().to_string_lossy().into_owned();
    let envd_dir = envd().parent().unwrap().to_string_lossy().into_owned();
    for host_path in [TEMPLATES, data.as_str(), envd_dir.as_str()] {
        assert!(
            !out.stdout.contains(host_path),
            "mountinfo shows {host_path}:\n{}",
            out.stdout
        );
    }
    rt.shutdown().await;
}
