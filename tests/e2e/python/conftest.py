"""Fixtures that give each test a sandbox, chosen by E2E_TARGET.

E2E_TARGET=envd     the standalone envd started by run-envd.sh (SDK debug mode,
                    with the access token envd was started with).
E2E_TARGET=sandbar  a real sandbar server: Sandbox.create() through the API.
"""

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, TypeVar

import pytest
from packaging.version import Version

from e2b import AsyncSandbox, ConnectionConfig, Sandbox

TARGET = os.environ.get("E2E_TARGET", "envd")
if TARGET not in ("envd", "sandbar"):
    raise RuntimeError(f'E2E_TARGET must be "envd" or "sandbar", got "{TARGET}"')

SANDBOX_ENVS: dict = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "sandbox-envs.json").read_text()
)
DEFAULT_USER = "user"
DEFAULT_HOME = "/home/user"

# The SDK's own fallback version in debug mode: it turns on every feature.
ENVD_VERSION = os.environ.get("E2E_ENVD_VERSION", "99.99.99")
ENVD_URL = os.environ.get("E2E_ENVD_URL", "http://localhost:49983")
DEBUG_SANDBOX_ID = "debug_sandbox_id"
TEMPLATE = os.environ.get("E2E_TEMPLATE", "base")

def envd_access_token() -> str:
    token = os.environ.get("E2E_ENVD_ACCESS_TOKEN")
    if not token:
        raise RuntimeError(
            "E2E_ENVD_ACCESS_TOKEN is not set: start envd with run-envd.sh "
            "or export the token its init file holds"
        )
    return token


def client_for(
    cls: type,
    token: str,
    sandbox_id: str = DEBUG_SANDBOX_ID,
    sandbox_domain: Optional[str] = None,
    envd_version: str = ENVD_VERSION,
):
    """A client of an existing sandbox that presents `token`.

    Built the way the SDK's connect() builds one, because its debug mode would
    drop the access token.
    """
    debug = TARGET == "envd"
    headers = {
        "E2b-Sandbox-Id": sandbox_id,
        "E2b-Sandbox-Port": str(ConnectionConfig.envd_port),
        "X-Access-Token": token,
    }
    config_opts = {"debug": debug, "extra_sandbox_headers": headers}
    if debug and ENVD_URL != "http://localhost:49983":
        config_opts["sandbox_url"] = ENVD_URL
    return cls(
        sandbox_id=sandbox_id,
        sandbox_domain=sandbox_domain,
        envd_version=Version(envd_version),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(**config_opts),
    )


def with_access_token(sandbox, token: str):
    """The same sandbox, seen by a client with another access token."""
    if TARGET == "envd":
        return client_for(type(sandbox), token)
    return client_for(
        type(sandbox),
        token,
        sandbox_id=sandbox.sandbox_id,
        sandbox_domain=sandbox.sandbox_domain,
        envd_version=str(sandbox._envd_version),
    )


@pytest.fixture(scope="module")
def sandbox():
    if TARGET == "envd":
        yield client_for(Sandbox, envd_access_token())
        return
    sbx = Sandbox.create(TEMPLATE, envs=SANDBOX_ENVS, timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
async def async_sandbox():
    if TARGET == "envd":
        yield client_for(AsyncSandbox, envd_access_token())
        return
    sbx = await AsyncSandbox.create(TEMPLATE, envs=SANDBOX_ENVS, timeout=300)
    try:
        yield sbx
    finally:
        await sbx.kill()


def unique_name(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def scratch(sandbox):
    """A fresh directory in the user's home, removed afterwards."""
    path = f"{DEFAULT_HOME}/{unique_name('py')}"
    sandbox.files.make_dir(path)
    yield path
    sandbox.files.remove(path)


@pytest.fixture
async def async_scratch(async_sandbox):
    path = f"{DEFAULT_HOME}/{unique_name('pyasync')}"
    await async_sandbox.files.make_dir(path)
    yield path
    await async_sandbox.files.remove(path)


T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def async_wait_for(check, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
