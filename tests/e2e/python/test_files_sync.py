"""filesystem.Filesystem and /files through the official Python SDK, sync API."""

from datetime import datetime, timezone

import httpx
import pytest

from e2b import (
    AuthenticationException,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
)

from conftest import DEFAULT_USER, wait_for, with_access_token


def test_write_read_text_and_bytes(sandbox, scratch):
    path = f"{scratch}/hello.txt"
    info = sandbox.files.write(path, "Hello ✓\n")
    assert info.path == path
    assert info.name == "hello.txt"
    assert sandbox.files.read(path) == "Hello ✓\n"

    blob = bytes((i * 31 + 7) % 256 for i in range(70_000))
    sandbox.files.write(f"{scratch}/b.bin", blob)
    assert sandbox.files.read(f"{scratch}/b.bin", format="bytes") == blob


def test_write_files_many(sandbox, scratch):
    files = [{"path": f"{scratch}/many/{i % 4}/f{i}.txt", "data": f"c{i}"} for i in range(20)]
    infos = sandbox.files.write_files(files)
    assert sorted(i.path for i in infos) == sorted(f["path"] for f in files)
    assert sandbox.files.read(files[7]["path"]) == "c7"


def test_list_exists_make_dir_rename_remove(sandbox, scratch):
    sandbox.files.write_files(
        [
            {"path": f"{scratch}/t/top.txt", "data": "top"},
            {"path": f"{scratch}/t/sub/inner.txt", "data": "inner"},
        ]
    )
    assert sorted(e.name for e in sandbox.files.list(f"{scratch}/t")) == ["sub", "top.txt"]
    deep = sorted(e.path for e in sandbox.files.list(f"{scratch}/t", depth=2))
    assert deep == [f"{scratch}/t/sub", f"{scratch}/t/sub/inner.txt", f"{scratch}/t/top.txt"]

    assert sandbox.files.exists(f"{scratch}/t/top.txt") is True
    assert sandbox.files.exists(f"{scratch}/t/nope") is False

    assert sandbox.files.make_dir(f"{scratch}/d/e/f") is True
    assert sandbox.files.make_dir(f"{scratch}/d/e/f") is False

    moved = sandbox.files.rename(f"{scratch}/t/top.txt", f"{scratch}/t/moved.txt")
    assert moved.path == f"{scratch}/t/moved.txt"
    assert sandbox.files.exists(f"{scratch}/t/top.txt") is False

    sandbox.files.remove(f"{scratch}/t")
    assert sandbox.files.exists(f"{scratch}/t") is False


def test_get_info_and_ownership(sandbox, scratch):
    path = f"{scratch}/info.txt"
    sandbox.files.write(path, "12345")
    sandbox.commands.run(f"chmod 640 {path}")
    info = sandbox.files.get_info(path)
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.mode & 0o777 == 0o640
    assert info.permissions == "-rw-r-----"
    assert info.owner == DEFAULT_USER
    assert info.group == DEFAULT_USER
    age = datetime.now(timezone.utc) - info.modified_time
    assert abs(age.total_seconds()) < 60

    sandbox.files.write(f"{scratch}/root.txt", "r", user="root")
    assert sandbox.files.get_info(f"{scratch}/root.txt").owner == "root"

    # A symlink is reported as one (is_symlink), with its resolved target.
    sandbox.commands.run(f"ln -s {path} {scratch}/link")
    link = sandbox.files.get_info(f"{scratch}/link")
    assert link.type == FileType.SYMLINK
    assert link.symlink_target == path


def test_file_metadata(sandbox, scratch):
    path = f"{scratch}/meta/tagged.txt"
    info = sandbox.files.write(path, "x", metadata={"Author": "Mish", "purpose": "e2e"})
    expected = {"author": "Mish", "purpose": "e2e"}
    assert info.metadata == expected
    assert sandbox.files.get_info(path).metadata == expected
    [entry] = sandbox.files.list(f"{scratch}/meta")
    assert entry.metadata == expected
    many = sandbox.files.write_files(
        [
            {"path": f"{scratch}/meta/a.txt", "data": "a"},
            {"path": f"{scratch}/meta/b.txt", "data": "b"},
        ],
        metadata={"batch": "1"},
    )
    assert [i.metadata for i in many] == [{"batch": "1"}, {"batch": "1"}]
    # Writing again without metadata clears it.
    assert sandbox.files.write(path, "y").metadata is None
    assert sandbox.files.get_info(path).metadata is None


def test_missing_file(sandbox, scratch):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read(f"{scratch}/missing.txt")
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(f"{scratch}/missing.txt")


def test_signed_urls(sandbox, scratch):
    path = f"{scratch}/up.txt"
    up = sandbox.upload_url(path)
    assert "signature=v1_" in up
    res = httpx.post(up, files={"file": (path, b"via url")})
    assert res.status_code == 200, res.text
    assert res.json()[0]["path"] == path
    assert sandbox.files.get_info(path).owner == DEFAULT_USER

    down = httpx.get(sandbox.download_url(path, use_signature_expiration=120))
    assert down.status_code == 200
    assert down.content == b"via url"

    expired = httpx.get(sandbox.download_url(path, use_signature_expiration=-60))
    assert expired.status_code == 401
    assert "expired" in expired.json()["message"]

    late = httpx.post(
        sandbox.upload_url(path, use_signature_expiration=-60),
        files={"file": (path, b"too late")},
    )
    assert late.status_code == 401
    assert sandbox.files.read(path) == "via url"


def test_wrong_token(sandbox):
    intruder = with_access_token(sandbox, "not-the-token")
    with pytest.raises(AuthenticationException):
        intruder.commands.run("echo nope")
    with pytest.raises(AuthenticationException):
        intruder.files.list("/")
    with pytest.raises(AuthenticationException):
        intruder.files.read("/etc/hostname")
    with pytest.raises(AuthenticationException):
        intruder.files.write("/tmp/should-not-exist", "x")


def test_watch_dir_polling(sandbox, scratch):
    # The sync SDK polls: CreateWatcher, GetWatcherEvents, RemoveWatcher.
    watcher = sandbox.files.watch_dir(scratch)
    try:
        sandbox.files.write(f"{scratch}/w.txt", "x")
        events = []

        def created_and_written():
            events.extend(watcher.get_new_events())
            kinds = {(e.type, e.name) for e in events}
            return (FilesystemEventType.CREATE, "w.txt") in kinds and (
                FilesystemEventType.WRITE,
                "w.txt",
            ) in kinds

        wait_for(created_and_written, "create and write events")
        sandbox.files.remove(f"{scratch}/w.txt")
        wait_for(
            lambda: any(
                e.type == FilesystemEventType.REMOVE and e.name == "w.txt"
                for e in watcher.get_new_events()
            ),
            "remove event",
        )
    finally:
        watcher.stop()
