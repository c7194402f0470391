"""process.Process through the official Python SDK, sync API."""

import time

import pytest

from e2b import (
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    TimeoutException,
)

from conftest import DEFAULT_HOME, DEFAULT_USER, SANDBOX_ENVS, unique_name, wait_for

UNKNOWN_PID = 2**22 + 12345  # above the kernel's pid_max ceiling


def running_pids(sandbox):
    return [p.pid for p in sandbox.commands.list()]


def test_foreground_with_callbacks(sandbox):
    out, err = [], []
    result = sandbox.commands.run(
        "echo out-1; echo err-1 >&2; echo out-2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert result.exit_code == 0
    assert result.stdout == "out-1\nout-2\n"
    assert result.stderr == "err-1\n"
    assert "".join(out) == "out-1\nout-2\n"
    assert "".join(err) == "err-1\n"


def test_non_zero_exit_raises(sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; echo broken >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "broken\n"
    assert "exit status 3" in (info.value.error or "")


def test_background_list_connect_kill(sandbox):
    cmd = "while true; do echo tick; sleep 0.1; done"
    handle = sandbox.commands.run(cmd, background=True)
    listed = [p for p in sandbox.commands.list() if p.pid == handle.pid]
    assert listed, "background command missing from list()"
    assert listed[0].cmd == "/bin/bash"
    assert listed[0].args == ["-l", "-c", cmd]

    handle.disconnect()
    time.sleep(0.3)
    assert handle.pid in running_pids(sandbox), "process died when the client disconnected"

    again = sandbox.commands.connect(handle.pid, timeout=10)
    assert again.pid == handle.pid
    # Connect streams only what comes after it: let some ticks arrive.
    time.sleep(0.3)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        again.wait()
    assert info.value.exit_code != 0
    assert "tick" in info.value.stdout
    wait_for(lambda: handle.pid not in running_pids(sandbox), "killed process to leave list()")
    assert sandbox.commands.kill(handle.pid) is False


def test_stdin_send_and_close(sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "hello ")
    handle.send_stdin(b"stdin\n")
    sandbox.commands.close_stdin(handle.pid)
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "hello stdin\n"


def test_stream_input(sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(handle.pid, iter(["one ", b"two ", "three\n"]))
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "one two three\n"


def test_timeout_kills_command(sandbox):
    marker = unique_name("timeout")
    started = time.monotonic()
    with pytest.raises((TimeoutException, CommandExitException)):
        sandbox.commands.run(f"sleep 30 # {marker}", timeout=1)
    assert time.monotonic() - started < 5
    wait_for(
        lambda: not any(marker in " ".join(p.args) for p in sandbox.commands.list()),
        "timed-out process to be killed",
        timeout=3,
    )


def test_envs_precedence(sandbox):
    key = next(iter(SANDBOX_ENVS))
    r = sandbox.commands.run(f'echo "${key}|$SANDBAR_E2E_OVERRIDE"')
    assert r.stdout == f"{SANDBOX_ENVS[key]}|{SANDBOX_ENVS['SANDBAR_E2E_OVERRIDE']}\n"
    r = sandbox.commands.run(
        'echo "$SANDBAR_E2E_OVERRIDE|$CALL_ONLY"',
        envs={"SANDBAR_E2E_OVERRIDE": "call-level", "CALL_ONLY": "1"},
    )
    assert r.stdout == "call-level|1\n"


def test_cwd(sandbox):
    assert sandbox.commands.run("pwd").stdout == f"{DEFAULT_HOME}\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    missing = f"/tmp/{unique_name('no-such-dir')}"
    with pytest.raises(InvalidArgumentException) as info:
        sandbox.commands.run("pwd", cwd=missing)
    assert missing in str(info.value)


def test_user(sandbox):
    assert sandbox.commands.run("whoami").stdout == f"{DEFAULT_USER}\n"
    assert sandbox.commands.run("whoami; echo $HOME", user="root").stdout == "root\n/root\n"


def test_unknown_pid(sandbox):
    assert sandbox.commands.kill(UNKNOWN_PID) is False
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(UNKNOWN_PID)
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(UNKNOWN_PID, "x")
