"""Metrics over time and Prometheus, through the official Python SDK and a
real Prometheus text parser: samples every 5 s for the sandbox's life (CPU
seen when it burns CPU), ranges honoured, none before it existed, samples
kept after it ends; `/metrics` for the operator's team only."""

import datetime as dt
import os
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2b import Sandbox

RUN_ID = "m" + uuid.uuid4().hex[:10]
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")
# One sample every 5 s: long enough for two, and a bit.
SAMPLED_FOR = 11.5


def api() -> tuple[str, str]:
    return os.environ["E2B_API_URL"], os.environ["E2B_API_KEY"]


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
