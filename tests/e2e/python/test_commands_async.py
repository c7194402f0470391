"""process.Process through the official Python SDK, async API."""

import asyncio
import time

import pytest

from e2b import CommandExitException, InvalidArgumentException, TimeoutException

from conftest import DEFAULT_USER, SANDBOX_ENVS, async_wait_for, unique_name


async def test_foreground_with_callbacks(async_sandbox):
    out, err = [], []
    result = await async_sandbox.commands.run(
        "echo out-1; echo err-1 >&2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert result.exit_code == 0
    assert result.stdout == "out-1\n"
    assert result.stderr == "err-1\n"
    assert "".join(out) == "out-1\n"
    assert "".join(err) == "err-1\n"


async def test_non_zero_exit_raises(async_sandbox):
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("echo broken >&2; exit 5")
    assert info.value.exit_code == 5
    assert info.value.stderr == "broken\n"


async def test_background_and_kill(async_sandbox):
    ticks = []
    handle = await async_sandbox.commands.run(
        "while true; do echo tick; sleep 0.1; done",
        background=True,
        on_stdout=ticks.append,
    )

    async def ticked():
        return "tick" in "".join(ticks)

    await async_wait_for(ticked, "background output")
    assert handle.pid in [p.pid for p in await async_sandbox.commands.list()]
    assert await handle.kill() is True
    with pytest.raises(CommandExitException):
        await handle.wait()
    assert await async_sandbox.commands.kill(handle.pid) is False


async def test_stdin_and_stream_input(async_sandbox):
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True)
    await async_sandbox.commands.send_stdin(handle.pid, "a ")
    stream = async_sandbox.commands.stream_input(handle.pid)
    await stream.send("b ")
    await stream.send(b"c\n")
    await stream.close()
    await async_sandbox.commands.close_stdin(handle.pid)
    result = await handle.wait()
    assert result.stdout == "a b c\n"


async def test_timeout_kills_command(async_sandbox):
    marker = unique_name("timeout")
    started = time.monotonic()
    with pytest.raises((TimeoutException, CommandExitException)):
        await async_sandbox.commands.run(f"sleep 30 # {marker}", timeout=1)
    assert time.monotonic() - started < 5

    async def gone():
        procs = await async_sandbox.commands.list()
        return not any(marker in " ".join(p.args) for p in procs)

    await async_wait_for(gone, "timed-out process to be killed", timeout=3)


async def test_envs_cwd_user(async_sandbox):
    key = next(iter(SANDBOX_ENVS))
    r = await async_sandbox.commands.run(
        f'echo "${key}"; pwd; whoami', cwd="/tmp", envs={"X": "1"}
    )
    assert r.stdout == f"{SANDBOX_ENVS[key]}\n/tmp\n{DEFAULT_USER}\n"
    r = await async_sandbox.commands.run("whoami", user="root")
    assert r.stdout == "root\n"
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.commands.run("pwd", cwd=f"/tmp/{unique_name('missing')}")


async def test_concurrent_commands(async_sandbox):
    results = await asyncio.gather(
        *(async_sandbox.commands.run(f"sleep 0.2; echo {i}") for i in range(10))
    )
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
