"""The control plane and public URLs through the official Python SDK: the
seed program's twin, the sandbox lifecycle, list filters and paging, the
proxy's answers, private sandboxes, egress, timeouts and team isolation."""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from e2b import (
    CommandExitException,
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
)

RUN_ID = "p" + uuid.uuid4().hex[:10]
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")
HERE = Path(__file__).parent


@pytest.fixture
def make():
    """Creates sandboxes tagged with this run; kills them afterwards."""
    made = []

    def create(**opts):
        metadata = {"run": RUN_ID, **opts.pop("metadata", {})}
        opts.setdefault("timeout", 120)
        sandbox = Sandbox.create(TEMPLATE, metadata=metadata, **opts)
        made.append(sandbox.sandbox_id)
        return sandbox

    yield create
    for sandbox_id in made:
        Sandbox.kill(sandbox_id)


def sandbar_env_only() -> dict:
    """Exactly what `sandbar env` printed (saved by the runner), plus PATH/HOME."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    path = os.environ.get("E2E_SANDBAR_ENV")
    if not path:
        pytest.fail("E2E_SANDBAR_ENV is not set: run this suite through run-platform.sh")
    for line in Path(path).read_text().splitlines():
        m = re.fullmatch(r"export ([A-Z0-9_]+)='(.*)'", line)
        if m:
            env[m.group(1)] = m.group(2).replace("'\\''", "'")
    return env


def get_until(url: str, ok, headers=None, timeout: float = 15.0) -> httpx.Response:
    """GETs until `ok(response)`: a background server needs a moment to listen."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, headers=headers or {})
        if ok(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def serve(sandbox: Sandbox, port: int, bind: str = ""):
    cmd = f"python3 -m http.server {port}" + (f" --bind {bind}" if bind else "")
    return sandbox.commands.run(cmd, background=True, cwd="/home/user")


def test_seed_twin_with_only_sandbar_env():
    env = sandbar_env_only()
    out = subprocess.run(
        [sys.executable, str(HERE / "seed.py")], env=env, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    domain = re.escape(env["E2B_DOMAIN"])
    m = re.search(rf"Server started at: https://3000-([a-z0-9]+)\.{domain}\n", out.stdout)
    assert m, out.stdout
    try:
        for name in (".bash_logout", ".bashrc", ".profile"):
            assert name in out.stdout
    finally:
        Sandbox.kill(m.group(1))


def test_create_get_metadata_envs(make):
    sandbox = make(metadata={"purpose": "get"}, envs={"FOO": "bar baz"})
    assert re.fullmatch(r"[a-z0-9]{20}", sandbox.sandbox_id)
    assert sandbox.commands.run('printf "%s" "$FOO"').stdout == "bar baz"
    info = Sandbox.get_info(sandbox.sandbox_id)
    assert info.template_id == "base"
    assert info.metadata == {"run": RUN_ID, "purpose": "get"}
    assert info.state.value == "running"
    assert abs((info.end_at - info.started_at).total_seconds() - 120) <= 1


def test_list_filters_and_paging(make):
    group = uuid.uuid4().hex[:8]
    ids = sorted(make(metadata={"group": group, "i": str(i)}).sandbox_id for i in range(3))
    paginator = Sandbox.list(query=SandboxQuery(metadata={"run": RUN_ID, "group": group}), limit=2)
    first = paginator.next_items()
    assert len(first) == 2 and paginator.has_next
    second = paginator.next_items()
    assert len(second) == 1 and not paginator.has_next
    assert sorted(s.sandbox_id for s in first + second) == ids
    one = Sandbox.list(query=SandboxQuery(metadata={"group": group, "i": "2"})).next_items()
    assert len(one) == 1 and one[0].metadata["i"] == "2" and one[0].sandbox_id in ids
    none = Sandbox.list(query=SandboxQuery(metadata={"group": "no-such-group"})).next_items()
    assert none == []


def test_set_timeout_and_connect(make):
    sandbox = make()
    sandbox.set_timeout(30)
    left = (Sandbox.get_info(sandbox.sandbox_id).end_at.timestamp() - time.time())
    assert 25 < left <= 31
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.commands.run("echo connected").stdout == "connected\n"


def test_kill_then_502(make):
    sandbox = make()
    serve(sandbox, 3000)
    url = f"https://{sandbox.get_host(3000)}"
    assert get_until(url, lambda r: r.status_code == 200).status_code == 200
    sandbox.kill()
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sandbox.sandbox_id)
    assert Sandbox.kill(sandbox.sandbox_id) is False
    r = httpx.get(url)
    assert r.status_code == 502
    assert r.json()["message"] == "The sandbox was not found"


def test_closed_port_502(make):
    sandbox = make()
    r = httpx.get(f"https://{sandbox.get_host(3999)}")
    assert r.status_code == 502
    assert r.json()["message"] == "The sandbox is running but port is not open"


def test_loopback_bound_server(make):
    sandbox = make()
    serve(sandbox, 3001, "127.0.0.1")
    r = get_until(f"https://{sandbox.get_host(3001)}", lambda r: r.status_code == 200)
    assert r.status_code == 200 and ".bashrc" in r.text


def test_private_sandbox(make):
    sandbox = make(network={"allow_public_traffic": False})
    token = sandbox.traffic_access_token
    assert token
    serve(sandbox, 3002)
    url = f"https://{sandbox.get_host(3002)}"
    ok = get_until(url, lambda r: r.status_code == 200, headers={"e2b-traffic-access-token": token})
    assert ok.status_code == 200
    assert httpx.get(url).status_code == 403
    assert httpx.get(url, headers={"e2b-traffic-access-token": "nope"}).status_code == 403
    assert sandbox.commands.run("echo ok").stdout == "ok\n"


def test_no_internet(make):
    # -k: reachability is what is tested; a TLS-intercepting egress proxy
    # would otherwise fail the control for a CA the template does not carry.
    curl = 'curl -sS -m 10 -o /dev/null -w "%{http_code}" https://pypi.org/simple/six/'
    assert make().commands.run(curl, timeout=30).stdout == "200"
    closed = make(allow_internet_access=False)
    with pytest.raises(CommandExitException):
        closed.commands.run(curl, timeout=30)
    serve(closed, 3003)
    r = get_until(f"https://{closed.get_host(3003)}", lambda r: r.status_code == 200)
    assert r.status_code == 200


def test_timeout_kills(make):
    sandbox = make(timeout=3)
    started = time.monotonic()
    while time.monotonic() - started < 15:
        try:
            Sandbox.get_info(sandbox.sandbox_id)
        except NotFoundException:
            break
        time.sleep(0.25)
    else:
        pytest.fail("still alive 15 s after a 3 s timeout")
    assert time.monotonic() - started >= 2
    assert httpx.get(f"https://{sandbox.get_host(49983)}/health").status_code == 502


def test_another_teams_key_sees_nothing_of_this_teams_sandboxes(make):
    other = os.environ.get("E2E_OTHER_TEAM_KEY")
    assert other, "run through run-platform.sh (E2E_OTHER_TEAM_KEY)"
    mine = make(metadata={"purpose": "isolation"})
    sid = mine.sandbox_id
    end_at = Sandbox.get_info(sid).end_at
    snap = mine.create_snapshot()

    assert Sandbox.list(api_key=other).next_items() == [], "the other team lists nothing"
    query = SandboxQuery(metadata={"run": RUN_ID})
    assert Sandbox.list(query=query, api_key=other).next_items() == []
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sid, api_key=other)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sid, api_key=other)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout(sid, 5, api_key=other)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.pause(sid, api_key=other)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_metrics(sid, api_key=other)
    assert Sandbox.kill(sid, api_key=other) is False, "kill by another team: not found"
    # Nor its snapshots.
    assert Sandbox.list_snapshots(api_key=other).next_items() == []
    assert Sandbox.list_snapshots(sandbox_id=sid, api_key=other).next_items() == []
    assert Sandbox.delete_snapshot(snap.snapshot_id, api_key=other) is False
    with pytest.raises(SandboxException) as refused:
        Sandbox.create(snap.snapshot_id, api_key=other, timeout=30)
    assert refused.value.status_code == 404, refused.value
    assert f"template '{snap.snapshot_id}' not found" in str(refused.value)
    assert Sandbox.list(api_key=other).next_items() == [], "nothing was started for it"

    # Still alive, running, on its own timeout, and still the owner's.
    assert mine.commands.run("echo alive").stdout == "alive\n"
    info = Sandbox.get_info(sid)
    assert info.state.value == "running"
    assert info.end_at == end_at, "the other team's set_timeout changed nothing"
    assert sid in [s.sandbox_id for s in Sandbox.list(query=query).next_items()]
    listed = Sandbox.list_snapshots(sandbox_id=sid).next_items()
    assert [s.snapshot_id for s in listed] == [snap.snapshot_id]
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
