"""Sandboxes that last, through the official Python SDK (sync and async):
pause in both modes and resume, snapshots, fork, list by state, and the
error shapes."""

import os
import uuid

import pytest

from e2b import AsyncSandbox, NotFoundException, Sandbox, SandboxQuery, SandboxState

RUN_ID = "q" + uuid.uuid4().hex[:10]
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")


@pytest.fixture
def made():
    ids = []
    yield ids
    for sandbox_id in ids:
        Sandbox.kill(sandbox_id)


def create(made, template=TEMPLATE, **opts):
    sandbox = Sandbox.create(template, metadata={"run": RUN_ID}, timeout=120, **opts)
    made.append(sandbox.sandbox_id)
    return sandbox


def boot_id(sandbox) -> str:
    return sandbox.commands.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()


def test_full_pause_keeps_the_boot_and_processes(made):
    sbx = create(made)
    sbx.files.write("/home/user/before.txt", "kept")
    sbx.commands.run("sleep 600", background=True)
    boot = boot_id(sbx)
    assert sbx.pause(mode="full") is True
    assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    assert Sandbox.pause(sbx.sandbox_id) is False, "409: already paused"
    paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED], metadata={"run": RUN_ID})).next_items()
    assert sbx.sandbox_id in [s.sandbox_id for s in paused]

    resumed = Sandbox.connect(sbx.sandbox_id)
    assert boot_id(resumed) == boot
    assert resumed.files.read("/home/user/before.txt") == "kept"
    assert resumed.commands.run("pgrep -x sleep").stdout.strip().isdigit()


def test_filesystem_pause_boots_afresh_on_the_files(made):
    sbx = create(made)
    sbx.files.write("/home/user/note.txt", "kept")
    boot = boot_id(sbx)
    assert sbx.pause(mode="filesystem") is True
    resumed = sbx.connect()
    assert boot_id(resumed) != boot
    assert resumed.files.read("/home/user/note.txt") == "kept"


def test_snapshot_and_fork(made):
    src = create(made)
    src.files.write("/home/user/state.txt", "v1")
    snap = src.create_snapshot()
    assert snap.snapshot_id
    src.files.write("/home/user/state.txt", "v2")
    kid = create(made, template=snap.snapshot_id)
    assert kid.files.read("/home/user/state.txt") == "v1"
    listed = Sandbox.list_snapshots(sandbox_id=src.sandbox_id).next_items()
    assert snap.snapshot_id in [s.snapshot_id for s in listed]

    forks = src.fork(count=2)
    assert len(forks) == 2
    for f in forks:
        assert isinstance(f, Sandbox), repr(f)
        made.append(f.sandbox_id)
        assert f.files.read("/home/user/state.txt") == "v2"
    assert len({f.sandbox_id for f in forks} | {src.sandbox_id}) == 3

    Sandbox.kill(kid.sandbox_id)
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False


def test_unknown_sandboxes_are_not_found():
    with pytest.raises(NotFoundException):
        Sandbox.pause("nosuchsandbox0000000")
    with pytest.raises(NotFoundException):
        Sandbox.connect("nosuchsandbox0000000")


@pytest.mark.asyncio
async def test_async_pause_resume_and_snapshot():
    sbx = await AsyncSandbox.create(TEMPLATE, metadata={"run": RUN_ID}, timeout=120)
    try:
        await sbx.files.write("/home/user/a.txt", "async")
        assert await sbx.pause() is True
        again = await AsyncSandbox.connect(sbx.sandbox_id)
        assert await again.files.read("/home/user/a.txt") == "async"
        snap = await again.create_snapshot()
        kid = await AsyncSandbox.create(snap.snapshot_id, metadata={"run": RUN_ID}, timeout=60)
        try:
            assert await kid.files.read("/home/user/a.txt") == "async"
        finally:
            await kid.kill()
        assert await AsyncSandbox.delete_snapshot(snap.snapshot_id) is True
    finally:
        await AsyncSandbox.kill(sbx.sandbox_id)
