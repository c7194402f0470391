"""Egress by name through the official Python SDK, against the test host of
run-platform.sh (a web server in a namespace of its own, named
allowed.e2e.test and denied.e2e.test by a test zone the server's DNS
forwarder asks). Nothing here leaves this machine."""

import os
import uuid

import pytest

from e2b import CommandExitException, Sandbox, SandboxException

RUN_ID = "g" + uuid.uuid4().hex[:10]
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")
WEB = os.environ.get("E2E_EGRESS_WEB")

pytestmark = pytest.mark.skipif(
    not WEB, reason="needs the egress test host of run-platform.sh (E2E_EGRESS_WEB)"
)


@pytest.fixture
def make():
    made = []

    def create(**opts):
        sandbox = Sandbox.create(TEMPLATE, metadata={"run": RUN_ID}, timeout=120, **opts)
        made.append(sandbox.sandbox_id)
        return sandbox

    yield create
    for sandbox_id in made:
        Sandbox.kill(sandbox_id)


def get(sandbox: Sandbox, url: str, extra: str = ""):
    """`curl` in the sandbox: the body, or None when it failed."""
    try:
        return sandbox.commands.run(f"curl -sS -m 5 {extra} {url}", timeout=20).stdout
    except CommandExitException:
        return None


def resolves(sandbox: Sandbox, name: str) -> bool:
    try:
        sandbox.commands.run(f"getent ahostsv4 {name}")
        return True
    except CommandExitException:
        return False


def test_allowed_names_resolve_and_connect_and_an_update_swaps_them(make):
    sandbox = make(network={"allow_out": ["allowed.e2e.test"], "deny_out": ["0.0.0.0/0"]})
    assert get(sandbox, "http://allowed.e2e.test/") == "hello allowed.e2e.test"
    assert not resolves(sandbox, "denied.e2e.test"), "a name not allowed resolved"
    # The allowed name's address under another name, and the raw address.
    assert get(sandbox, "http://denied.e2e.test/", f"--resolve denied.e2e.test:80:{WEB}") is None
    assert get(sandbox, f"http://{WEB}/") is None
    assert not resolves(sandbox, "pypi.org")
    assert sandbox.get_info().network["allow_out"] == ["allowed.e2e.test"]

    sandbox.update_network({"allow_out": ["denied.e2e.test"], "deny_out": ["0.0.0.0/0"]})
    assert get(sandbox, "http://denied.e2e.test/") == "hello denied.e2e.test"
    assert not resolves(sandbox, "allowed.e2e.test")

    # An update without rules clears them: the registries resolve again.
    sandbox.update_network({})
    assert resolves(sandbox, "pypi.org")
    assert get(sandbox, "http://allowed.e2e.test/") == "hello allowed.e2e.test"


def test_a_wildcard_allows_the_names_under_it(make):
    sandbox = make(network={"allow_out": ["*.e2e.test"], "deny_out": ["0.0.0.0/0"]})
    assert get(sandbox, "http://allowed.e2e.test/") == "hello allowed.e2e.test"
    assert get(sandbox, "http://denied.e2e.test/") == "hello denied.e2e.test"
    assert not resolves(sandbox, "pypi.org")


def test_a_bad_rule_is_a_400_that_says_what_is_wrong(make):
    with pytest.raises(SandboxException) as err:
        make(network={"allow_out": ["exa mple.com"], "deny_out": ["0.0.0.0/0"]})
    assert "400" in str(err.value) and "not a valid domain name" in str(err.value), err.value
