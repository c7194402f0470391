//! `process.Process` against the real envd binary, over Connect/HTTP 1.1.

mod common;

use std::time::{Duration, Instant};

use common::{alive, b64, can_run_as_user, Envd};
use serde_json::json;

#[tokio::test]
async fn start_streams_output_and_exit_code() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let (stream, pid) = envd
        .start_bash(
            "echo hi; whoami; pwd; echo $HOME $USER $LOGNAME; echo err >&2; exit 3",
            json!({}),
            &[],
        )
        .await;
    assert!(pid > 0);
    let out = stream.collect().await;
    let home = nix::unistd::User::from_name("user").unwrap().unwrap().dir;
    let home = home.display();
    assert_eq!(
        out.stdout(),
        format!("hi\nuser\n{home}\n{home} user user\n")
    );
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(
        out.end(),
        &json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
    );
    assert_eq!(out.trailer, Some(json!({})));

    let ok = envd.run_bash("true", json!({}), &[]).await;
    assert_eq!(
        ok.end(),
        &json!({"exited": true, "status": "exit status 0"})
    );
}

#[tokio::test]
async fn environment_cwd_and_user() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start_with_init(Some(
        json!({"envVars": {"SANDBOX_VAR": "s", "OVERRIDDEN": "sandbox"}}),
    ));
    let script = "echo $SANDBOX_VAR $CALL_VAR $OVERRIDDEN; pwd; id -un";
    let extra =
        json!({"process": {"envs": {"CALL_VAR": "c", "OVERRIDDEN": "call"}, "cwd": "/tmp"}});
    let out = envd.run_bash(script, extra, &[]).await;
    assert_eq!(out.stdout(), "s c call\n/tmp\nuser\n");

    // Basic auth picks the user.
    let root_auth = format!("Basic {}", b64(b"root:"));
    let out = envd
        .run_bash("id -u; pwd", json!({}), &[("authorization", &root_auth)])
        .await;
    assert_eq!(out.stdout(), "0\n/root\n");

    // `~` expands to the user's home.
    let out = envd
        .run_bash("pwd", json!({"process": {"cwd": "~"}}), &[])
        .await;
    let home = nix::unistd::User::from_name("user").unwrap().unwrap().dir;
    assert_eq!(out.stdout(), format!("{}\n", home.display()));
}

#[tokio::test]
async fn start_errors() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    // A missing cwd.
    let body = json!({"process": {"cmd": "/bin/true", "cwd": "/no/such/dir"}});
    let out = envd.stream("Start", body, &[]).await.collect().await;
    assert_eq!(out.starts, 0);
    let trailer = out.trailer.expect("end-of-stream");
    assert_eq!(trailer["error"]["code"], "invalid_argument");
    assert_eq!(
        trailer["error"]["message"],
        "cwd '/no/such/dir' does not exist"
    );

    // An unknown user.
    let auth = format!("Basic {}", b64(b"nobody-here:"));
    let body = json!({"process": {"cmd": "/bin/true"}});
    let out = envd
        .stream("Start", body, &[("authorization", &auth)])
        .await
        .collect()
        .await;
    let trailer = out.trailer.expect("end-of-stream");
    assert_eq!(trailer["error"]["code"], "unauthenticated");
    assert_eq!(trailer["error"]["message"], "invalid user: 'nobody-here'");

    // A program that does not exist.
    let body = json!({"process": {"cmd": "/no/such/program"}});
    let out = envd.stream("Start", body, &[]).await.collect().await;
    let trailer = out.trailer.expect("end-of-stream");
    assert_eq!(trailer["error"]["code"], "invalid_argument");
}

#[tokio::test]
async fn stdin_send_and_close() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let (stream, pid) = envd
        .start_bash("cat; echo done", json!({"stdin": true}), &[])
        .await;
    let input = json!({"process": {"pid": pid}, "input": {"stdin": b64(b"hello\n")}});
    assert_eq!(envd.unary("SendInput", input).await, (200, json!({})));
    let (status, _) = envd
        .unary("CloseStdin", json!({"process": {"pid": pid}}))
        .await;
    assert_eq!(status, 200);
    let out = stream.collect().await;
    assert_eq!(out.stdout(), "hello\ndone\n");
    assert_eq!(out.end()["exitCode"], json!(null), "exit code 0 is omitted");

    // Without `stdin: true` the process reads /dev/null and input is refused.
    let (stream, pid) = envd.start_bash("cat; sleep 5", json!({}), &[]).await;
    let input = json!({"process": {"pid": pid}, "input": {"stdin": b64(b"x")}});
    let (status, body) = envd.unary("SendInput", input).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "failed_precondition");
    assert!(
        body["message"].as_str().unwrap().contains("without stdin"),
        "{body}"
    );
    envd.unary(
        "SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    stream.collect().await;
}

#[tokio::test]
async fn stream_input_feeds_stdin() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let (stream, pid) = envd
        .start_bash("head -c 6", json!({"stdin": true}), &[])
        .await;
    let mut body = Vec::new();
    for msg in [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"data": {"input": {"stdin": b64(b"abc")}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": b64(b"def")}}}),
    ] {
        body.extend_from_slice(&common::envelope(0, &serde_json::to_vec(&msg).unwrap()));
    }
    let req = hyper::Request::post(envd.url("/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = envd.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let out = stream.collect().await;
    assert_eq!(out.stdout(), "abcdef");
}

#[tokio::test]
async fn pty_output_input_and_resize() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let script = "stty size; read line; echo got:$line; read again; stty size";
    let extra = json!({"pty": {"size": {"cols": 100, "rows": 30}}});
    let (mut stream, pid) = envd.start_bash(script, extra, &[]).await;
    let mut seen = String::new();
    while !seen.contains("30 100") {
        let event = stream.next_event().await.expect("pty output");
        if let Some(data) = event["data"]["pty"].as_str() {
            seen.push_str(&String::from_utf8_lossy(&base64_decode(data)));
        }
    }
    let input = json!({"process": {"pid": pid}, "input": {"pty": b64(b"abc\n")}});
    assert_eq!(envd.unary("SendInput", input).await.0, 200);
    let resize = json!({"process": {"pid": pid}, "pty": {"size": {"cols": 120, "rows": 40}}});
    assert_eq!(envd.unary("Update", resize).await, (200, json!({})));
    let input = json!({"process": {"pid": pid}, "input": {"pty": b64(b"\n")}});
    assert_eq!(envd.unary("SendInput", input).await.0, 200);
    let out = stream.collect().await;
    let all = seen + &out.pty();
    assert!(all.contains("got:abc"), "{all:?}");
    assert!(all.contains("40 120"), "{all:?}");
    assert_eq!(out.end()["exited"], true);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn signals_kill_the_whole_group() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let (mut stream, pid) = envd
        .start_bash("sleep 300 & echo $!; wait", json!({}), &[])
        .await;
    let event = stream.next_event().await.unwrap();
    let child: u32 = String::from_utf8(base64_decode(event["data"]["stdout"].as_str().unwrap()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child));
    let (status, _) = envd
        .unary(
            "SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
        )
        .await;
    assert_eq!(status, 200);
    let out = stream.collect().await;
    assert_eq!(
        out.end(),
        &json!({"exitCode": -1, "status": "signal: terminated", "error": "signal: terminated"})
    );
    wait_until(
        || !alive(child),
        "the background child to die with its group",
    )
    .await;

    let (stream, pid) = envd.start_bash("sleep 300", json!({}), &[]).await;
    // Enum by number works too.
    envd.unary("SendSignal", json!({"process": {"pid": pid}, "signal": 9}))
        .await;
    assert_eq!(stream.collect().await.end()["status"], "signal: killed");

    let (status, body) = envd
        .unary(
            "SendSignal",
            json!({"process": {"pid": 999_999_999u32}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"code": "not_found", "message": "process with pid 999999999 not found"})
    );
}

#[tokio::test]
async fn timeout_header_is_the_process_lifetime() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let started = Instant::now();
    let (stream, _pid) = envd
        .start_bash(
            "echo before; sleep 30",
            json!({}),
            &[("connect-timeout-ms", "700")],
        )
        .await;
    let out = stream.collect().await;
    let took = started.elapsed();
    assert_eq!(out.stdout(), "before\n");
    assert_eq!(out.end()["status"], "signal: killed");
    assert_eq!(out.trailer, Some(json!({})));
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn keepalives_fill_silence() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let (stream, _) = envd
        .start_bash(
            "sleep 2.5; echo done",
            json!({}),
            &[("keepalive-ping-interval", "1")],
        )
        .await;
    let out = stream.collect().await;
    assert!(out.keepalives >= 2, "{out:?}");
    assert_eq!(out.stdout(), "done\n");
}

#[tokio::test]
async fn connect_list_and_reattach_after_client_left() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let script = "echo one; sleep 1; echo two";
    let (mut stream, pid) = envd.start_bash(script, json!({"tag": "worker"}), &[]).await;
    // Read "one" first, so that what a re-attach sees is only what comes
    // after it (otherwise a slow bash could print "one" after the attach).
    let first = stream.next_event().await.expect("a data event");
    let text = first["data"]["stdout"].as_str().map(base64_decode);
    assert_eq!(text.as_deref(), Some(&b"one\n"[..]), "{first}");
    // The client goes away; the process must keep running.
    drop(stream);

    let (status, list) = envd.unary("List", json!({})).await;
    assert_eq!(status, 200);
    let mine = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
        .expect("listed");
    assert_eq!(mine["tag"], "worker");
    assert_eq!(mine["config"]["cmd"], "/bin/bash");
    assert_eq!(mine["config"]["args"], json!(["-c", script]));

    let attached = envd
        .stream("Connect", json!({"process": {"tag": "worker"}}), &[])
        .await;
    let out = attached.collect().await;
    assert_eq!(out.starts, 1);
    assert_eq!(out.stdout(), "two\n");
    assert_eq!(out.end()["status"], "exit status 0");

    // Shortly after the end, attaching still yields start + end.
    let late = envd
        .stream("Connect", json!({"process": {"pid": pid}}), &[])
        .await
        .collect()
        .await;
    assert_eq!(late.starts, 1);
    assert_eq!(late.end()["status"], "exit status 0");
    let (_, list) = envd.unary("List", json!({})).await;
    assert!(
        !list.to_string().contains("worker"),
        "ended processes are not listed: {list}"
    );

    let out = envd
        .stream("Connect", json!({"process": {"pid": 999_999_999u32}}), &[])
        .await
        .collect()
        .await;
    assert_eq!(out.trailer.unwrap()["error"]["code"], "not_found");
}

#[tokio::test]
async fn access_token_and_cors() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start_with_init(Some(json!({"accessToken": "secret-token"})));
    let (status, body) = envd.unary("List", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");
    let (status, _) = envd
        .unary_with("List", json!({}), &[("x-access-token", "wrong")])
        .await;
    assert_eq!(status, 401);
    // A rejected upload that is still being sent gets its 401 (not a
    // connection closed under the client).
    let (status, body) = slow_upload(&envd, "/process.Process/SendInput").await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");
    let (status, _) = envd
        .unary_with("List", json!({}), &[("x-access-token", "secret-token")])
        .await;
    assert_eq!(status, 200);
    let out = envd
        .run_bash("echo ok", json!({}), &[("x-access-token", "secret-token")])
        .await;
    assert_eq!(out.stdout(), "ok\n");

    let preflight = hyper::Request::options(envd.url("/process.Process/Start"))
        .header("origin", "https://example.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-access-token",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = envd.client.request(preflight).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let unauthorized = hyper::Request::post(envd.url("/process.Process/List"))
        .header("origin", "https://example.test")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let resp = envd.client.request(unauthorized).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn binary_codec() {
    use buffa::Message;
    use sandbar_proto::process::{ListResponse, ProcessConfig, StartRequest, StartResponse};
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/echo".into(),
            args: vec!["binary".into()],
            ..Default::default()
        }
        .into(),
        stdin: Some(false),
        ..Default::default()
    };
    let req = hyper::Request::post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+proto")
        .body(http_body_util::Full::new(common::envelope(
            0,
            &start.encode_to_vec(),
        )))
        .unwrap();
    let resp = envd.client.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let mut rest = &body[..];
    let mut stdout = Vec::new();
    let mut saw_end = false;
    while !rest.is_empty() {
        let flags = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        if flags & 0x02 != 0 {
            break;
        }
        let event = StartResponse::decode_from_slice(payload).unwrap();
        match event.event.as_option().and_then(|e| e.event.as_ref()) {
            Some(sandbar_proto::process::process_event::Event::Data(d)) => {
                if let Some(sandbar_proto::process::process_event::data_event::Output::Stdout(b)) =
                    &d.output
                {
                    stdout.extend_from_slice(b);
                }
            }
            Some(sandbar_proto::process::process_event::Event::End(end)) => {
                saw_end = true;
                assert_eq!(end.status, "exit status 0");
            }
            _ => {}
        }
    }
    assert_eq!(stdout, b"binary\n");
    assert!(saw_end);

    let req = hyper::Request::post(envd.url("/process.Process/List"))
        .header("content-type", "application/proto")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = envd.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    ListResponse::decode_from_slice(&body).unwrap();
}

#[tokio::test]
async fn many_concurrent_processes_keep_their_exit_codes() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let runs = (0..24).map(|i| {
        let envd = &envd;
        async move {
            let out = envd.run_bash(&format!("exit {i}"), json!({}), &[]).await;
            (i, out.end()["exitCode"].as_i64().unwrap_or(0))
        }
    });
    for (i, code) in futures::future::join_all(runs).await {
        assert_eq!(code, i);
    }
}

#[tokio::test]
async fn orphans_are_reaped() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    // The subshell exits at once; its `sleep` is re-parented to envd.
    let out = envd
        .run_bash("(sleep 0.3 &); echo started", json!({}), &[])
        .await;
    assert_eq!(out.stdout(), "started\n");
    let envd_pid = envd.pid();
    wait_until(
        || zombie_children(envd_pid) == 0 && children(envd_pid) == 0,
        "orphans reaped",
    )
    .await;
}

fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat
            .rsplit_once(')')
            .map(|(_, a)| a.trim_start().to_string())
        else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            found.push((pid, state));
        }
    }
    found
}

fn children(parent: u32) -> usize {
    children_of(parent).len()
}

fn zombie_children(parent: u32) -> usize {
    children_of(parent)
        .iter()
        .filter(|(_, s)| *s == 'Z')
        .count()
}

async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_children_neither_block_the_end_nor_outlive_envd() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let started = Instant::now();
    // The background sleep keeps stdout open after bash exits.
    let (stream, _) = envd.start_bash("sleep 30 & echo $!", json!({}), &[]).await;
    let out = stream.collect().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.end()["status"], "exit status 0");
    let sleeper: u32 = out.stdout().trim().parse().unwrap();
    assert!(alive(sleeper), "the background child keeps running");
    drop(envd);
    wait_until(
        || !alive(sleeper),
        "envd's shutdown to kill what it started",
    )
    .await;
}

#[tokio::test]
async fn as_pid1_it_reaps_orphans_without_stealing_statuses() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start_as_pid1();
    let out = envd
        .run_bash("echo $$; (sleep 0.2 &); exit 7", json!({}), &[])
        .await;
    assert_eq!(out.end()["exitCode"], 7);
    // The pid is the namespace's, so envd really is PID 1 there.
    assert!(out.stdout().trim().parse::<u32>().unwrap() > 1);
    let runs = (0..10).map(|i| {
        let envd = &envd;
        async move {
            let script = format!("(sleep 0.1 & sleep 0.05 &); exit {i}");
            let out = envd.run_bash(&script, json!({}), &[]).await;
            (i, out.end()["exitCode"].as_i64().unwrap_or(0))
        }
    });
    for (i, code) in futures::future::join_all(runs).await {
        assert_eq!(code, i);
    }
    let ids = children_of(envd.pid());
    assert_eq!(ids.len(), 1, "unshare has one child, envd: {ids:?}");
    let envd_host_pid = ids[0].0;
    wait_until(
        || children(envd_host_pid) == 0,
        "PID 1 envd to reap every orphan",
    )
    .await;
}

#[tokio::test]
async fn large_output_arrives_complete_and_in_order() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    let out = envd
        .run_bash("seq 1 300000; seq 1 1000 >&2", json!({}), &[])
        .await;
    let expected: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout() == expected, "stdout differs");
    let expected_err: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out.stderr).unwrap(), expected_err);
}

/// POSTs a 512 KiB body in chunks, 20 ms apart, over a raw socket (as
/// undici does, it keeps writing while the answer may already be there), and
/// returns the status line and JSON body. A write failure panics.
async fn slow_upload(envd: &Envd, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 8;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", envd.port))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        CHUNK * CHUNKS
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..CHUNKS {
        tokio::time::sleep(Duration::from_millis(20)).await;
        socket
            .write_all(&[b' '; CHUNK])
            .await
            .expect("the server keeps reading the body");
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn start_command_from_the_init_file_runs_as_root_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("id -u > {}; exec sleep 30", marker.display());
    let envd = Envd::start_with_init(Some(json!({
        "envVars": {"SANDBOX_VAR": "s"},
        "startCmd": {"cmd": "/bin/bash", "args": ["-c", script], "cwd": "/tmp"}
    })));
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = envd.unary("List", json!({})).await;
        assert_eq!(status, 200);
        let wrote = std::fs::read_to_string(&marker).is_ok_and(|s| s.ends_with('\n'));
        if body["processes"].as_array().is_some_and(|p| !p.is_empty()) && wrote {
            listed = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let process = &listed["processes"][0];
    assert_eq!(process["tag"], "start-command", "{listed}");
    assert_eq!(process["config"]["cmd"], "/bin/bash");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "0");
    let pid = process["pid"].as_u64().unwrap();
    let (status, _) = envd
        .unary(
            "SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(status, 200);
}
