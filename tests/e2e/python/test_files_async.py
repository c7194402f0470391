"""filesystem.Filesystem and /files through the official Python SDK, async API."""

import httpx
import pytest

from e2b import AuthenticationException, FileNotFoundException, FilesystemEventType

from conftest import DEFAULT_USER, async_wait_for, with_access_token


async def test_write_read_list(async_sandbox, async_scratch):
    path = f"{async_scratch}/a.txt"
    await async_sandbox.files.write(path, "async text")
    assert await async_sandbox.files.read(path) == "async text"
    assert await async_sandbox.files.read(path, format="bytes") == b"async text"
    infos = await async_sandbox.files.write_files(
        [{"path": f"{async_scratch}/m/{i}.txt", "data": str(i)} for i in range(10)]
    )
    assert len(infos) == 10
    names = sorted(e.name for e in await async_sandbox.files.list(f"{async_scratch}/m"))
    assert names == sorted(f"{i}.txt" for i in range(10))
    info = await async_sandbox.files.get_info(path)
    assert info.owner == DEFAULT_USER
    assert info.size == len("async text")
    assert await async_sandbox.files.exists(path) is True
    await async_sandbox.files.remove(path)
    assert await async_sandbox.files.exists(path) is False
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.read(path)


async def test_watch_dir_stream(async_sandbox, async_scratch):
    events = []
    handle = await async_sandbox.files.watch_dir(async_scratch, on_event=events.append)
    try:
        await async_sandbox.files.write(f"{async_scratch}/w.txt", "x")

        async def created():
            return any(e.type == FilesystemEventType.CREATE and e.name == "w.txt" for e in events)

        await async_wait_for(created, "create event")
        await async_sandbox.files.remove(f"{async_scratch}/w.txt")

        async def removed():
            return any(e.type == FilesystemEventType.REMOVE and e.name == "w.txt" for e in events)

        await async_wait_for(removed, "remove event")
    finally:
        await handle.stop()


async def test_signed_urls(async_sandbox, async_scratch):
    path = f"{async_scratch}/u.bin"
    async with httpx.AsyncClient() as http:
        res = await http.post(async_sandbox.upload_url(path), files={"file": (path, b"\x00\x01\x02")})
        assert res.status_code == 200, res.text
        down = await http.get(async_sandbox.download_url(path))
        assert down.content == b"\x00\x01\x02"
        expired = await http.get(async_sandbox.download_url(path, use_signature_expiration=-60))
        assert expired.status_code == 401


async def test_wrong_token(async_sandbox):
    intruder = with_access_token(async_sandbox, "not-the-token")
    with pytest.raises(AuthenticationException):
        await intruder.commands.run("echo nope")
    with pytest.raises(AuthenticationException):
        await intruder.files.read("/etc/hostname")
