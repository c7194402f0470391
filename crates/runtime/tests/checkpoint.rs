//! Memory that survives the server process (CRIU): a stop of the runtime
//! checkpoints running sandboxes and the next start resumes them with their
//! processes; snapshots taken with memory start sandboxes that have their
//! source's processes, each with its own envd token; a tree criu cannot
//! take is a clear error and files still work.
//!
//! They need criu at `/usr/local/sbin/criu` (scripts/install-criu.sh) and
//! skip, saying so, without it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use sandbar_runtime::{Catalog, PauseMode, Runtime, RuntimeError, RuntimeOptions, State};

const CRIU: &str = "/usr/local/sbin/criu";

/// Says why a test did not run, past the test harness's output capture (a
/// skipped test must not look like a pass).
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Prints a measurement, past the output capture too.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Options with criu, or `None` (and the reason printed) where it is missing.
fn with_criu(test: &str) -> Option<RuntimeOptions> {
    // The runtime's own account of a restore that fell back (RUST_LOG=debug).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sandbar_runtime=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let bin = PathBuf::from(std::env::var("SANDBAR_TEST_CRIU").unwrap_or_else(|_| CRIU.into()));
    if !bin.is_file() {
        skipped(
            test,
            &format!(
                "no criu binary at {} (install it with scripts/install-criu.sh)",
                bin.display()
            ),
        );
        return None;
    }
    Some(RuntimeOptions {
        criu: Some(bin),
        ..options()
    })
}

/// A python process holding `mib` MiB of random bytes; SIGUSR1 makes it
/// write the SHA-256 of that memory to /tmp/after (it wrote it to
/// /tmp/before at start, and its pid to /tmp/pid).
const HOLDER: &str = r#"
import hashlib, os, signal, sys, time
buf = bytearray(os.urandom(int(sys.argv[1]) << 20))
def sum_to(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(hashlib.sha256(buf).hexdigest())
    os.rename(tmp, path)
signal.signal(signal.SIGUSR1, lambda *_: sum_to("/tmp/after"))
with open("/tmp/pid.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename("/tmp/pid.tmp", "/tmp/pid")
sum_to("/tmp/before")
while True:
    time.sleep(1)
"#;

async fn start_holder(rt: &Runtime, id: &str, mib: u32, token: Option<&str>) -> (String, String) {
    let cmd = format!(
        "cat > /tmp/hold.py <<'EOF'\n{HOLDER}\nEOF\n\
         setsid nohup python3 /tmp/hold.py {mib} >/dev/null 2>&1 < /dev/null &\n\
         for i in $(seq 200); do [ -s /tmp/before ] && break; sleep 0.05; done; cat /tmp/pid; echo; cat /tmp/before"
    );
    let out = exec_with_token(rt, id, "root", &cmd, 30_000, token).await;
    let mut lines = out.stdout.lines();
    let (pid, sum) = (lines.next(), lines.next());
    assert!(
        pid.is_some_and(|p| !p.is_empty()) && sum.is_some_and(|s| s.len() == 64),
        "the holder started: {out:?}"
    );
    (pid.unwrap().to_string(), sum.unwrap().to_string())
}

/// The holder's pid inside, and the hash of its memory now.
async fn ask_holder(rt: &Runtime, id: &str, token: Option<&str>) -> (String, String) {
    let out = exec_with_token(
        rt,
        id,
        "root",
        "rm -f /tmp/after; p=$(cat /tmp/pid); kill -USR1 $p || echo gone; \
         for i in $(seq 200); do [ -s /tmp/after ] && break; sleep 0.05; done; echo $p; cat /tmp/after",
        30_000,
        token,
    )
    .await;
    let mut lines = out.stdout.lines();
    (
        lines.next().unwrap_or_default().to_string(),
        lines.next().unwrap_or_default().to_string(),
    )
}

async fn boot_id(rt: &Runtime, id: &str, token: Option<&str>) -> String {
    let out = exec_with_token(
        rt,
        id,
        "user",
        "cat /proc/sys/kernel/random/boot_id",
        10_000,
        token,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    out.stdout.trim().to_string()
}

/// One HTTP/1 request to `port` in the sandbox: status and body.
async fn http(
    rt: &Runtime,
    id: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    try_http(rt, id, port, method, path, body, token)
        .await
        .unwrap_or_else(|| panic!("port {port} of {id} is closed"))
}

/// [`http`], or `None` while nothing listens on `port`.
async fn try_http(
    rt: &Runtime,
    id: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let stream = rt.dial(id, port).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("x-access-token", t);
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Status of `GET path` on envd with `token`.
async fn envd_status(rt: &Runtime, id: &str, path: &str, token: Option<&str>) -> u16 {
    http(rt, id, 49983, "GET", path, "", token).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_survive_a_restart_of_the_runtime() {
    let Some(opts) = with_criu("processes_survive_a_restart_of_the_runtime") else {
        return;
    };
    let t = runtime_with("ckrs", opts.clone()).await;
    let rt = &t.rt;
    assert!(rt.memory_persistence(), "criu check failed on this host");
    let mut s = spec("mem1");
    s.memory_mb = 512;
    rt.create(s).await.expect("create");
    let (pid, before) = start_holder(rt, "mem1", 100, None).await;
    exec(rt, "mem1", "user", "echo kept > /home/user/note", 5_000).await;
    let boot = boot_id(rt, "mem1", None).await;
    // A second sandbox paused in place before the stop: it is checkpointed too.
    rt.create(spec("mem2")).await.expect("create");
    exec(
        rt,
        "mem2",
        "user",
        "nohup sleep 1000 >/dev/null 2>&1 &",
        5_000,
    )
    .await;
    rt.pause("mem2", PauseMode::Full).await.expect("pause");
    // A memory snapshot of a sandbox frozen in place: it stays frozen.
    let frozen = rt.snapshot("mem2", true).await.expect("snapshot");
    assert_eq!(rt.state("mem2"), Some(State::Paused(PauseMode::Full)));
    let still_frozen = rt.cgroup("mem2").unwrap().dirs().iter().any(|d| {
        std::fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            || std::fs::read_to_string(d.join("cgroup.events"))
                .is_ok_and(|s| s.contains("frozen 1"))
    });
    assert!(still_frozen, "the snapshot left it frozen");
    let mut s = spec("mem2a");
    s.base_layer = Some(frozen.layer.clone());
    rt.create(s).await.expect("create from it");
    assert_eq!(
        exec(rt, "mem2a", "user", "pgrep -c -x sleep", 5_000)
            .await
            .stdout,
        "1\n"
    );
    // mem2a (restored, so its user namespace is host root's: see
    // checkpoint.rs) is checkpointed at the stop too.

    let stopped = Instant::now();
    rt.shutdown().await;
    report(&format!(
        "shutdown with 3 sandboxes checkpointed (one holding 100 MiB): {:.0} ms",
        stopped.elapsed().as_secs_f64() * 1e3
    ));
    let rt2 = Runtime::start_with(config(&t.instance, t.data.path()), None, opts)
        .await
        .expect("second start");
    for id in ["mem1", "mem2", "mem2a"] {
        assert_eq!(
            rt2.state(id),
            Some(State::Paused(PauseMode::Full)),
            "{id} is held with its processes"
        );
    }
    let resumed = Instant::now();
    rt2.resume("mem1").await.expect("resume");
    report(&format!(
        "resume of a sandbox holding 100 MiB from its checkpoint: {:.0} ms",
        resumed.elapsed().as_secs_f64() * 1e3
    ));
    assert_eq!(boot_id(&rt2, "mem1", None).await, boot, "the same boot");
    let (pid_after, after) = ask_holder(&rt2, "mem1", None).await;
    assert_eq!(pid_after, pid, "the same process, same pid inside");
    assert_eq!(after, before, "its memory is what it was");
    assert_eq!(
        exec(&rt2, "mem1", "user", "cat /home/user/note", 5_000)
            .await
            .stdout,
        "kept\n"
    );
    // The images went with the resume.
    assert!(!t.data.path().join("store/checkpoints/mem1").exists());

    // A memory snapshot of a checkpointed sandbox shares its images.
    let linked = rt2.snapshot("mem2", true).await.expect("snapshot");
    let mut s = spec("mem2b");
    s.base_layer = Some(linked.layer.clone());
    rt2.create(s).await.expect("create from it");
    assert_eq!(
        exec(&rt2, "mem2b", "user", "pgrep -c -x sleep", 5_000)
            .await
            .stdout,
        "1\n"
    );
    assert!(rt2.kill("mem2b").await.unwrap());

    rt2.resume("mem2a").await.expect("resume a restored one");
    assert_eq!(
        exec(&rt2, "mem2a", "user", "pgrep -c -x sleep", 5_000)
            .await
            .stdout,
        "1\n",
        "a restored sandbox is checkpointed and restored again"
    );
    assert!(rt2.kill("mem2a").await.unwrap());

    rt2.resume("mem2").await.expect("resume the paused one");
    let out = exec(&rt2, "mem2", "user", "pgrep -c -x sleep", 5_000).await;
    assert_eq!(out.stdout, "1\n", "its process came back: {out:?}");
    assert!(rt2.kill("mem1").await.unwrap());
    assert!(rt2.kill("mem2").await.unwrap());
    rt2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_snapshot_starts_sandboxes_that_have_its_processes() {
    let Some(opts) = with_criu("a_memory_snapshot_starts_sandboxes_that_have_its_processes") else {
        return;
    };
    let t = runtime_with("cksn", opts).await;
    let rt = &t.rt;
    let mut s = spec("src");
    s.envd_access_token = Some("token-src".into());
    rt.create(s).await.expect("create");
    let src = Some("token-src");
    let (pid, before) = start_holder(rt, "src", 32, src).await;
    exec_with_token(rt, "src", "user", "echo v1 > /home/user/f", 5_000, src).await;
    let boot = boot_id(rt, "src", src).await;

    let snap = rt
        .snapshot("src", true)
        .await
        .expect("snapshot with memory");
    assert!(snap.memory);
    assert_eq!(rt.state("src"), Some(State::Running), "the source runs on");
    let (_, sum) = ask_holder(rt, "src", src).await;
    assert_eq!(sum, before, "and its process too");
    exec_with_token(rt, "src", "user", "echo v2 > /home/user/f", 5_000, src).await;

    for (id, token) in [("c1", "token-1"), ("c2", "token-2")] {
        let mut s = spec(id);
        s.base_layer = Some(snap.layer.clone());
        s.envd_access_token = Some(token.into());
        s.env_vars.insert("WHO".into(), id.into());
        rt.create(s).await.expect("create from the snapshot");
    }
    for (id, token) in [("c1", "token-1"), ("c2", "token-2")] {
        let tok = Some(token);
        let (pid_c, sum_c) = ask_holder(rt, id, tok).await;
        assert_eq!(pid_c, pid, "{id} has the source's process");
        assert_eq!(sum_c, before, "{id}: with the source's memory");
        assert_eq!(
            boot_id(rt, id, tok).await,
            boot,
            "{id} goes on in that boot"
        );
        // envd answers with the copy's own token, not the source's.
        assert_eq!(envd_status(rt, id, "/envs", tok).await, 200, "{id}");
        assert_eq!(envd_status(rt, id, "/envs", src).await, 401, "{id}");
        let out = exec_with_token(rt, id, "user", "echo $WHO; cat /home/user/f", 5_000, tok).await;
        assert_eq!(out.stdout, format!("{id}\nv1\n"), "{out:?}");
    }
    // Independent from there on.
    exec_with_token(
        rt,
        "c1",
        "root",
        "echo mine > /home/user/f; kill $(cat /tmp/pid)",
        5_000,
        Some("token-1"),
    )
    .await;
    let out = exec_with_token(
        rt,
        "c2",
        "root",
        "cat /home/user/f; kill -0 $(cat /tmp/pid) && echo alive",
        5_000,
        Some("token-2"),
    )
    .await;
    assert_eq!(out.stdout, "v1\nalive\n", "{out:?}");

    for id in ["src", "c1", "c2"] {
        assert!(rt.kill(id).await.unwrap());
    }
    assert_eq!(
        rt.collect_layers(Default::default()).await,
        vec![snap.layer.clone()]
    );
    assert!(
        !t.data
            .path()
            .join(format!("store/layers/{}.memory", snap.layer))
            .exists(),
        "the images go with their layer"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_on_the_node_network_get_their_own_address_and_resolver() {
    let Some(opts) = with_criu("copies_on_the_node_network_get_their_own_address_and_resolver")
    else {
        return;
    };
    let t = runtime_on_network_with(opts).await;
    let rt = &t.rt;
    let a = rt.create(spec("na")).await.expect("create");
    start_holder(rt, "na", 8, None).await;
    // A server that keeps listening across the checkpoint.
    exec(
        rt,
        "na",
        "user",
        "cd /tmp && setsid nohup python3 -m http.server 8080 >/dev/null 2>&1 < /dev/null & sleep 1",
        10_000,
    )
    .await;
    let snap = rt.snapshot("na", true).await.expect("snapshot");
    let b = rt
        .create({
            let mut s = spec("nb");
            s.base_layer = Some(snap.layer.clone());
            s
        })
        .await
        .expect("create from the snapshot");
    assert_ne!(a.addr, b.addr);
    let out = exec(
        rt,
        "nb",
        "user",
        "cat /etc/resolv.conf; ip -4 -o addr show eth0 | awk '{print $4}'",
        5_000,
    )
    .await;
    let b_addr = b.addr.unwrap().to_string();
    assert!(out.stdout.contains(&format!("{b_addr}/")), "{out:?}");
    let resolver = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .expect("a resolver")
        .to_string();
    let a_conf = exec(rt, "na", "user", "cat /etc/resolv.conf", 5_000)
        .await
        .stdout;
    assert!(
        !a_conf.contains(&resolver),
        "its own resolver: {a_conf} vs {resolver}"
    );
    // The copied server answers in the copy.
    let stream = rt
        .dial("nb", 8080)
        .await
        .expect("the server listens in the copy");
    drop(stream);
    for id in ["na", "nb"] {
        assert!(rt.kill(id).await.unwrap());
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_criu_cannot_take_is_a_clear_error_and_files_still_work() {
    let Some(opts) = with_criu("a_tree_criu_cannot_take_is_a_clear_error_and_files_still_work")
    else {
        return;
    };
    let t = runtime_with("ckno", opts.clone()).await;
    let rt = &t.rt;
    rt.create(spec("odd")).await.expect("create");
    // A deleted file held open, larger than criu keeps of such files.
    exec(
        rt,
        "odd",
        "user",
        "head -c 70M /dev/zero > /home/user/big && (setsid nohup sleep 1000 < /home/user/big >/dev/null 2>&1 &) && sleep 0.3 && rm /home/user/big && echo kept > /home/user/note",
        30_000,
    )
    .await;
    let err = rt.snapshot("odd", true).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Checkpoint(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ghost"), "criu's reason: {msg}");
    assert_eq!(rt.state("odd"), Some(State::Running), "the sandbox runs on");
    assert_eq!(
        exec(rt, "odd", "user", "cat /home/user/note", 5_000)
            .await
            .stdout,
        "kept\n"
    );
    let files = rt
        .snapshot("odd", false)
        .await
        .expect("a files-only snapshot");
    assert!(!files.memory);

    // At a stop it keeps its files only, and boots afresh after.
    let boot = boot_id(rt, "odd", None).await;
    rt.shutdown().await;
    let rt2 = Runtime::start_with(config(&t.instance, t.data.path()), None, opts)
        .await
        .expect("second start");
    assert_eq!(rt2.state("odd"), Some(State::Paused(PauseMode::Filesystem)));
    rt2.resume("odd").await.expect("resume");
    assert_ne!(boot_id(&rt2, "odd", None).await, boot);
    assert_eq!(
        exec(&rt2, "odd", "user", "cat /home/user/note", 5_000)
            .await
            .stdout,
        "kept\n"
    );
    assert!(rt2.kill("odd").await.unwrap());
    rt2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_and_restore_of_200_mib_are_timed() {
    let Some(opts) = with_criu("checkpoint_and_restore_of_200_mib_are_timed") else {
        return;
    };
    let t = runtime_with("cktm", opts).await;
    let rt = &t.rt;
    let mut s = spec("big");
    s.memory_mb = 768;
    rt.create(s).await.expect("create");
    let (pid, before) = start_holder(rt, "big", 200, None).await;
    let mut dumps = Vec::new();
    let mut restores = Vec::new();
    for round in 0..3 {
        let started = Instant::now();
        let snap = rt.snapshot("big", true).await.expect("snapshot");
        dumps.push(started.elapsed());
        let id = format!("copy{round}");
        let mut s = spec(&id);
        s.memory_mb = 768;
        s.base_layer = Some(snap.layer.clone());
        let started = Instant::now();
        rt.create(s).await.expect("restore");
        restores.push(started.elapsed());
        let (p, sum) = ask_holder(rt, &id, None).await;
        assert_eq!((p.as_str(), sum.as_str()), (pid.as_str(), before.as_str()));
        assert!(rt.kill(&id).await.unwrap());
        rt.collect_layers(Default::default()).await;
    }
    let ms = |d: &[Duration]| {
        d.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report(&format!(
        "python holding 200 MiB: checkpoint (freeze, dump, commit, thaw) {} ms; restore into a new sandbox (until envd answers with its own token) {} ms",
        ms(&dumps),
        ms(&restores)
    ));
    assert!(rt.kill("big").await.unwrap());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_interpreter_copy_keeps_its_kernels_state() {
    let Some(opts) = with_criu("a_code_interpreter_copy_keeps_its_kernels_state") else {
        return;
    };
    let interpreter = helper().with_file_name("sandbar-interpreter");
    if !interpreter.is_file() {
        skipped(
            "a_code_interpreter_copy_keeps_its_kernels_state",
            &format!(
                "no {} (cargo build -p sandbar-interpreter)",
                interpreter.display()
            ),
        );
        return;
    }
    let inst = instance("ckci");
    let data = tempfile::Builder::new()
        .prefix("sandbar-rt-")
        .tempdir()
        .unwrap();
    let mut cfg = config(&inst, data.path());
    cfg.interpreter_bin = Some(interpreter);
    let rt = Runtime::start_with(cfg, None, opts)
        .await
        .expect("runtime starts");
    let t = TestRuntime::adopt(rt, inst, data);
    let rt = &t.rt;
    if !rt.has_template("code-interpreter-v1") {
        skipped(
            "a_code_interpreter_copy_keeps_its_kernels_state",
            "no code-interpreter-v1 template",
        );
        rt.shutdown().await;
        return;
    }
    let mut s = spec("ci");
    s.template = "code-interpreter-v1".into();
    s.memory_mb = 1024;
    rt.create(s).await.expect("create");
    let run = |id: &'static str, code: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = try_http(
                rt,
                id,
                49999,
                "POST",
                "/execute",
                &serde_json::json!({ "code": code }).to_string(),
                None,
            )
            .await
            .unwrap_or((0, String::new()));
            if status == 200 || Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Ready once the default kernel runs code.
    let deadline = Instant::now() + Duration::from_secs(90);
    while try_http(rt, "ci", 49999, "GET", "/ready", "", None)
        .await
        .map(|r| r.0)
        != Some(200)
    {
        assert!(Instant::now() < deadline, "the interpreter got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Kernels reached over Unix sockets come back connected; over loopback
    // TCP (Jupyter's default) their connections come back closed and the
    // interpreter starts a new kernel. Templates built before the python
    // kernel was given the ipc transport get a server that uses one here.
    let ipc = exec(
        rt,
        "ci",
        "root",
        "grep -qs '\"ipc\"' /usr/local/share/jupyter/kernels/python3/kernel.json && echo ipc",
        5_000,
    )
    .await;
    if ipc.stdout.trim() != "ipc" {
        let out = exec(
            rt,
            "ci",
            "root",
            r#"mkdir -p /tmp/kernels/python3 && python3 -c '
import json
spec = json.load(open("/usr/share/jupyter/kernels/python3/kernel.json"))
spec.setdefault("metadata", {})["sandbar"] = {"transport": "ipc"}
json.dump(spec, open("/tmp/kernels/python3/kernel.json", "w"))
' && kill $(pidof sandbar-interpreter) && sleep 0.5
setsid nohup /usr/bin/sandbar-interpreter --kernels-dir /tmp/kernels >/dev/null 2>&1 < /dev/null &
echo restarted"#,
            10_000,
        )
        .await;
        assert!(out.stdout.contains("restarted"), "{out:?}");
        let deadline = Instant::now() + Duration::from_secs(90);
        while try_http(rt, "ci", 49999, "GET", "/ready", "", None)
            .await
            .map(|r| r.0)
            != Some(200)
        {
            assert!(Instant::now() < deadline, "the interpreter got ready again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (status, body) = run("ci", "secret = 41\nprint('set')").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("set"), "{body}");
    let snap = rt.snapshot("ci", true).await.expect("snapshot with memory");
    let mut s = spec("ci2");
    s.template = "code-interpreter-v1".into();
    s.memory_mb = 1024;
    s.base_layer = Some(snap.layer.clone());
    rt.create(s).await.expect("create from the snapshot");
    let (status, body) = run("ci2", "print(secret + 1)").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42"), "the kernel's state came along: {body}");
    let (status, body) = run("ci", "print(secret)").await;
    assert!(status == 200 && body.contains("41"), "{status} {body}");
    for id in ["ci", "ci2"] {
        assert!(rt.kill(id).await.unwrap());
    }
    rt.shutdown().await;
}
