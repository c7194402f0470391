"""Metrics over time and Prometheus, through the official Python SDK and a
real Prometheus text parser: samples every 5 s for the sandbox's life (CPU
seen when it burns CPU), ranges honoured, none before it existed, samples
kept after it ends; `/metrics` for the operator's team only, counting what
happened between two scrapes exactly: a failed create, a resume, requests
through the proxy, DNS queries by verdict (against the test zone of
run-platform.sh), and the node's disk and running sandboxes."""

import datetime as dt
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2b import Sandbox, SandboxException

RUN_ID = "m" + uuid.uuid4().hex[:10]
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")
# One sample every 5 s: long enough for two, and a bit.
SAMPLED_FOR = 11.5


def api() -> tuple[str, str]:
    return os.environ["E2B_API_URL"], os.environ["E2B_API_KEY"]


def scrape() -> dict:
    """`/metrics`, parsed: family name -> family."""
    url, key = api()
    r = httpx.get(f"{url}/metrics", headers={"X-API-KEY": key})
    assert r.status_code == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, sample: str, **labels) -> float:
    """The sum of the samples named `sample` with these labels (0 when the
    series does not exist yet: a counter nothing has counted)."""
    family = families.get(sample)
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        if family is None and sample.endswith(suffix):
            family = families.get(sample[: -len(suffix)])
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def moved(before: dict, after: dict, sample: str, **labels) -> float:
    return value(after, sample, **labels) - value(before, sample, **labels)


@pytest.fixture
def make():
    """Creates sandboxes tagged with this run; kills them afterwards."""
    made = []

    def create(**opts):
        opts.setdefault("timeout", 120)
        sandbox = Sandbox.create(TEMPLATE, metadata={"run": RUN_ID}, **opts)
        made.append(sandbox.sandbox_id)
        return sandbox

    yield create
    for sandbox_id in made:
        Sandbox.kill(sandbox_id)


def test_metrics_over_time_follow_the_sandbox_and_outlive_it():
    created = dt.datetime.now(dt.timezone.utc)
    sbx = Sandbox.create(TEMPLATE, metadata={"run": RUN_ID}, timeout=120)
    try:
        # One core busy for the sampled window: CPU shows in the samples.
        sbx.commands.run("timeout 12 sh -c 'while :; do :; done'", background=True)
        time.sleep(SAMPLED_FOR)
        samples = sbx.get_metrics()
        assert len(samples) >= 2, samples
        stamps = [m.timestamp for m in samples]
        assert stamps == sorted(stamps), stamps
        assert all(m.cpu_count == 2 and m.mem_total == 512 << 20 for m in samples), samples
        assert max(m.cpu_used_pct for m in samples) > 20, samples
        assert all(0 < m.mem_used <= m.mem_total for m in samples), samples

        # A range before it existed holds nothing; a later start drops the first.
        hour = dt.timedelta(hours=1)
        assert sbx.get_metrics(start=created - 2 * hour, end=created - hour) == []
        later = sbx.get_metrics(start=stamps[-1].replace(microsecond=0))
        assert 1 <= len(later) < len(samples) + 2, (later, samples)
    finally:
        sbx.kill()
    kept = Sandbox.get_metrics(sbx.sandbox_id)
    assert len(kept) >= len(samples), "samples outlive the sandbox"


def test_prometheus_metrics_parse_and_name_what_happened():
    url, key = api()
    sbx = Sandbox.create(TEMPLATE, metadata={"run": RUN_ID}, timeout=60)
    try:
        sbx.commands.run("true")
        r = httpx.get(f"{url}/metrics", headers={"X-API-KEY": key})
        assert r.status_code == 200, r.text
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        creates = families["sandbar_sandbox_creates"]
        assert creates.type == "counter"
        ok = sum(s.value for s in creates.samples if s.labels.get("result") == "ok")
        assert ok >= 1, creates.samples
        running = [
            s for s in families["sandbar_sandboxes"].samples if s.labels["state"] == "running"
        ]
        assert sum(s.value for s in running) >= 1, running
        assert families["sandbar_sandbox_create_seconds"].type == "histogram"
        # The command above went through the proxy.
        assert sum(s.value for s in families["sandbar_proxy_requests"].samples) >= 1
        assert any(s.value > 0 for s in families["sandbar_proxy_bytes"].samples)
        assert families["sandbar_node_cpus"].samples[0].value >= 1
        # The server keeps one code-interpreter-v1 sandbox warm (its default).
        target = {s.labels["template"]: s.value for s in families["sandbar_warm_pool_target"].samples}
        assert target.get("code-interpreter-v1") == 1, target
        ready = {s.labels["template"]: s.value for s in families["sandbar_warm_pool_ready"].samples}
        assert 0 <= ready["code-interpreter-v1"] <= 1, ready
    finally:
        sbx.kill()


def test_prometheus_metrics_are_for_the_operators_team_only():
    url, _ = api()
    other = os.environ.get("E2E_OTHER_TEAM_KEY")
    if not other:
        pytest.skip("E2E_OTHER_TEAM_KEY is not set (run through run-platform.sh)")
    r = httpx.get(f"{url}/metrics", headers={"X-API-KEY": other})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == 403
    assert httpx.get(f"{url}/metrics").status_code == 401


def test_prometheus_counts_a_failed_create_under_the_error_label(make):
    before = scrape()
    # A range no sandbox may reach: the node refuses the create (400).
    with pytest.raises(SandboxException) as refused:
        make(network={"allow_out": ["169.254.169.254/32"]})
    assert "never reach" in str(refused.value), refused.value
    failed = scrape()
    assert moved(before, failed, "sandbar_sandbox_creates_total", result="error") == 1
    assert moved(before, failed, "sandbar_sandbox_creates_total", result="ok") == 0
    assert moved(before, failed, "sandbar_sandbox_create_seconds_count") == 0, "only successes are timed"
    # Refused before the node is asked (a template that does not exist): a
    # failed create too.
    with pytest.raises(SandboxException) as unknown:
        Sandbox.create("no-such-template-anywhere", metadata={"run": RUN_ID})
    assert "not found" in str(unknown.value), unknown.value
    unfound = scrape()
    assert moved(failed, unfound, "sandbar_sandbox_creates_total", result="error") == 1
    assert moved(failed, unfound, "sandbar_sandbox_creates_total", result="ok") == 0
    failed = unfound
    make()
    made = scrape()
    assert moved(failed, made, "sandbar_sandbox_creates_total", result="ok") == 1
    assert moved(failed, made, "sandbar_sandbox_creates_total", result="error") == 0
    assert moved(failed, made, "sandbar_sandbox_create_seconds_count", template=TEMPLATE) == 1


def test_prometheus_times_a_resume(make):
    sbx = make()
    assert sbx.pause() is True
    before = scrape()
    resumed = Sandbox.connect(sbx.sandbox_id)
    after = scrape()
    assert moved(before, after, "sandbar_sandbox_resumes_total", result="ok") == 1
    assert moved(before, after, "sandbar_sandbox_resumes_total", result="error") == 0
    assert moved(before, after, "sandbar_sandbox_resume_seconds_count") == 1
    assert moved(before, after, "sandbar_sandbox_resume_seconds_bucket", le="+Inf") == 1
    took = moved(before, after, "sandbar_sandbox_resume_seconds_sum")
    assert 0 < took < 30, took
    assert resumed.commands.run("echo back").stdout == "back\n"


def test_prometheus_times_requests_through_the_proxy(make):
    sbx = make()
    sbx.commands.run("python3 -m http.server 3000", background=True, cwd="/home/user")
    url = f"https://{sbx.get_host(3000)}/"
    deadline = time.monotonic() + 15
    while httpx.get(url).status_code != 200:
        assert time.monotonic() < deadline, "the server in the sandbox never answered"
        time.sleep(0.1)
    before = scrape()
    # Nothing else goes through the proxy between the two scrapes (the API
    # is reached on its own listener).
    sizes = []
    for _ in range(5):
        r = httpx.get(url)
        assert r.status_code == 200
        sizes.append(len(r.content))
    closed = httpx.get(f"https://{sbx.get_host(3999)}/")
    assert closed.status_code == 502
    after = scrape()
    assert moved(before, after, "sandbar_proxy_request_seconds_count") == 6
    assert moved(before, after, "sandbar_proxy_request_seconds_bucket", le="+Inf") == 6
    assert 0 < moved(before, after, "sandbar_proxy_request_seconds_sum") < 30
    assert moved(before, after, "sandbar_proxy_requests_total", status="200") == 5
    assert moved(before, after, "sandbar_proxy_requests_total", status="502") == 1
    assert moved(before, after, "sandbar_proxy_bytes_total", direction="out") >= sum(sizes)


# One DNS query (type A, class IN) to the sandbox's resolver; prints the
# answer's rcode and answer count, or "none" when no answer came.
DNS_QUERY = r"""
import random, socket, struct, sys
ns = next(l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver"))
qname = b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[1].split(".")) + b"\0"
query = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(query, (ns, 53))
try:
    answer = s.recv(4096)
except socket.timeout:
    print("none")
else:
    print(answer[3] & 15, struct.unpack(">H", answer[6:8])[0])
"""

VERDICTS = ("relayed", "name_denied", "refused")


def test_prometheus_counts_dns_queries_by_verdict(make):
    if not os.environ.get("E2E_EGRESS_WEB"):
        pytest.skip("needs the test zone of run-platform.sh (E2E_EGRESS_WEB)")
    named = make(network={"allow_out": ["allowed.e2e.test"], "deny_out": ["0.0.0.0/0"]})
    offline = make(allow_internet_access=False)
    for sbx in (named, offline):
        sbx.files.write("/tmp/dns_query.py", DNS_QUERY)

    def ask(sbx: Sandbox, name: str) -> str:
        return sbx.commands.run(f"python3 /tmp/dns_query.py {name}").stdout.strip()

    def counts() -> dict:
        families = scrape()
        return {v: value(families, "sandbar_dns_queries_total", verdict=v) for v in VERDICTS}

    def delta(a: dict, b: dict) -> dict:
        return {v: b[v] - a[v] for v in VERDICTS}

    start = counts()
    # An allowed name: relayed to the test zone, which answers it (one A).
    assert ask(named, "allowed.e2e.test") == "0 1"
    relayed = counts()
    assert delta(start, relayed) == {"relayed": 1, "name_denied": 0, "refused": 0}
    # A name the policy does not allow: NXDOMAIN from the forwarder itself.
    assert ask(named, "denied.e2e.test") == "3 0"
    denied = counts()
    assert delta(relayed, denied) == {"relayed": 0, "name_denied": 1, "refused": 0}
    # A sandbox without internet: nftables drops its query before the
    # forwarder (whose REFUSED is the second lock), so nothing is counted.
    assert ask(offline, "allowed.e2e.test") == "none"
    dropped = counts()
    assert delta(denied, dropped) == {"relayed": 0, "name_denied": 0, "refused": 0}


def data_dir() -> Path:
    """The server's data dir: run-platform.sh keeps it beside the saved env."""
    env = os.environ.get("E2E_SANDBAR_ENV")
    if not env:
        pytest.skip("E2E_SANDBAR_ENV is not set (run through run-platform.sh)")
    data = Path(env).parent / "data"
    assert (data / "serve.json").is_file(), data
    return data


def test_prometheus_shows_the_nodes_disk_and_running_sandboxes(make):
    data = data_dir()
    fs_before = os.statvfs(data)
    families = scrape()
    fs_after = os.statvfs(data)
    total = value(families, "sandbar_node_disk_total_bytes")
    assert total == fs_before.f_blocks * fs_before.f_frsize, (total, fs_before)
    available = value(families, "sandbar_node_disk_available_bytes")
    free = sorted(fs.f_bavail * fs.f_frsize for fs in (fs_before, fs_after))
    slack = 64 << 20  # what else writes to this disk meanwhile
    assert free[0] - slack <= available <= free[1] + slack, (available, free)
    assert 0 < available <= total
    assert families["sandbar_node_memory_total_bytes"].samples[0].value > 0
    # No maximum of sandboxes is configured on a node: none is shown.
    assert not any(name.startswith("sandbar_node_sandboxes_max") for name in families)

    running = value(families, "sandbar_node_sandboxes_running")
    a, b = make(), make()
    assert value(scrape(), "sandbar_node_sandboxes_running") == running + 2
    assert a.pause() is True
    assert value(scrape(), "sandbar_node_sandboxes_running") == running + 1
    b.kill()
    assert value(scrape(), "sandbar_node_sandboxes_running") == running
    Sandbox.connect(a.sandbox_id)
    now = scrape()
    assert value(now, "sandbar_node_sandboxes_running") == running + 1
    # The node's count and the store's agree (no build runs here).
    stored = sum(s.value for s in now["sandbar_sandboxes"].samples if s.labels["state"] == "running")
    assert value(now, "sandbar_node_sandboxes_running") == stored
