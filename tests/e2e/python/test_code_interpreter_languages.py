"""The code-interpreter SDK (sync and async) with the languages of a
code-interpreter-v1 sandbox besides Python and bash: JavaScript and
TypeScript (Deno), R (IRkernel) and Java (JJava). For each: hello world,
state across cells, an error with a traceback, env vars (sandbox-wide and
per call), cwd, a context of its own, an interrupt on a client timeout.

It needs a sandbar server, so it is skipped against a standalone envd. One
sandbox per language at a time (a Deno kernel holds about 200 MiB, a JVM
about 180 MiB, in a sandbox of 512 MiB); contexts are removed after use.
"""

import re
import time
import uuid

import pytest

from conftest import DEFAULT_HOME, SANDBOX_ENVS, TARGET

pytestmark = pytest.mark.skipif(
    TARGET != "sandbar", reason="needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)"
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def no_error(execution, what: str):
    err = execution.error
    assert err is None, f"{what}: {err.name}: {err.value}\n{err.traceback}"
    return execution


def only_text(execution, what: str) -> str:
    no_error(execution, what)
    assert len(execution.results) == 1, f"{what}: {execution.to_json()}"
    return execution.results[0].text


def r_value(execution, what: str) -> str:
    """R prints a value as `[1] "text"` (or `[1] 42`)."""
    text = only_text(execution, what)
    m = re.fullmatch(r'\[1\] "(.*)"', text) or re.fullmatch(r"\[1\] (.*)", text)
    assert m, f"{what}: not an R vector of one: {text!r}"
    return m.group(1)


LANGUAGES = {
    "javascript": dict(
        hello='console.log("Hello, World!")',
        set_state="let answer = 41 + 1",
        read_state="answer",
        failing='function fails() {\n  throw new TypeError("bad value 17")\n}\nfails()',
        error_name="TypeError",
        traceback_names="fails",
        read_env=lambda name: f'process.env.{name} ?? "<unset>"',
        cwd="process.cwd()",
        busy="while (true) {}",
        value=lambda e, what: no_error(e, what).text,
    ),
    "r": dict(
        hello='cat("Hello, World!\\n")',
        set_state="answer <- 41 + 1",
        read_state="answer",
        failing='fails <- function() stop("bad value 17")\nfails()',
        error_name=None,
        traceback_names="fails()",
        read_env=lambda name: f'Sys.getenv("{name}", unset = "<unset>")',
        cwd="getwd()",
        busy="Sys.sleep(60)",
        value=r_value,
    ),
    "java": dict(
        hello='System.out.println("Hello, World!");',
        set_state="int answer = 41 + 1;",
        read_state="answer",
        failing='void fails() { throw new IllegalStateException("bad value 17"); }\nfails();',
        error_name=None,  # JJava says RuntimeException; the traceback has the real one
        traceback_names="IllegalStateException: bad value 17",
        read_env=lambda name: f'java.util.Objects.requireNonNullElse(System.getenv("{name}"), "<unset>")',
        cwd='System.getProperty("user.dir")',
        busy="while (true) { Thread.onSpinWait(); }",
        value=only_text,
    ),
}


@pytest.fixture(scope="module", params=list(LANGUAGES))
def lang(request):
    """(language, its snippets, a sandbox): one sandbox per language, made
    right before its tests (pytest groups them) and killed after."""
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(envs=SANDBOX_ENVS, timeout=300)
    try:
        yield request.param, LANGUAGES[request.param], sbx
    finally:
        sbx.kill()


def test_languages_defaults_are_listed_right_after_create():
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(timeout=120)
    try:
        listed = sbx.list_code_contexts()
        languages = sorted(c.language for c in listed)
        assert languages == ["javascript", "python"], [(c.id, c.language, c.cwd) for c in listed]
        assert all(c.cwd == DEFAULT_HOME for c in listed)
    finally:
        sbx.kill()


def test_languages_hello_and_state(lang):
    name, s, sbx = lang
    hello = no_error(sbx.run_code(s["hello"], language=name), "hello")
    assert hello.logs.stdout == ["Hello, World!\n"]
    no_error(sbx.run_code(s["set_state"], language=name), "set")
    assert s["value"](sbx.run_code(s["read_state"], language=name), "read") == "42"


def test_languages_error_with_traceback(lang):
    name, s, sbx = lang
    execution = sbx.run_code(s["failing"], language=name)
    err = execution.error
    assert err is not None, execution.to_json()
    if s["error_name"]:
        assert err.name == s["error_name"], err.name
    assert "bad value 17" in err.value
    assert s["traceback_names"] in err.traceback, err.traceback
    assert not ANSI.search(err.traceback), repr(err.traceback)


def test_languages_env_vars(lang):
    name, s, sbx = lang
    read = s["read_env"]
    value = s["value"]
    assert value(sbx.run_code(read("SANDBAR_E2E_SANDBOX_VAR"), language=name), "sandbox-wide") == "from-sandbox"
    during = sbx.run_code(read("SANDBAR_E2E_OVERRIDE"), language=name, envs={"SANDBAR_E2E_OVERRIDE": "call-level"})
    assert value(during, "per call") == "call-level"
    assert value(sbx.run_code(read("SANDBAR_E2E_OVERRIDE"), language=name), "restored") == "sandbox-level"
    new = sbx.run_code(read("SANDBAR_E2E_CALL"), language=name, envs={"SANDBAR_E2E_CALL": "py-sdk"})
    assert value(new, "new var") == "py-sdk"
    assert value(sbx.run_code(read("SANDBAR_E2E_CALL"), language=name), "unset again") == "<unset>"


def test_languages_context_and_cwd(lang):
    name, s, sbx = lang
    dir = f"{DEFAULT_HOME}/cwd-{name}-{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(dir)
    c = sbx.create_code_context(language=name, cwd=dir)
    try:
        assert (c.language, c.cwd) == (name, dir)
        assert s["value"](sbx.run_code(s["cwd"], context=c), "cwd") == dir
        # A context of its own: the default context's state is not there.
        assert sbx.run_code(s["read_state"], context=c).error is not None
        assert any(x.id == c.id for x in sbx.list_code_contexts())
    finally:
        sbx.remove_code_context(c)
        sbx.files.remove(dir)
    assert s["value"](sbx.run_code(s["cwd"], language=name), "default cwd") == DEFAULT_HOME


def test_languages_timeout_interrupts(lang):
    from e2b import TimeoutException

    name, s, sbx = lang
    c = sbx.create_code_context(language=name)
    try:
        no_error(sbx.run_code(s["set_state"], context=c), "set")
        with pytest.raises(TimeoutException):
            sbx.run_code(s["busy"], context=c, timeout=2)
        start = time.monotonic()
        assert s["value"](sbx.run_code(s["read_state"], context=c, timeout=20), "after") == "42"
        took = time.monotonic() - start
        assert took < 5, f"the next run took {took:.1f} s: the busy code was not interrupted"
    finally:
        sbx.remove_code_context(c)


def test_languages_typescript_names(lang):
    name, _, sbx = lang
    if name != "javascript":
        pytest.skip("JavaScript's sandbox only")
    for language in ("js", "ts", "typescript"):
        execution = no_error(sbx.run_code('console.log("Hello, World!")', language=language), language)
        assert execution.logs.stdout == ["Hello, World!\n"], language
    typed = sbx.run_code("const n: number = 6\nawait Promise.resolve(n * 7)", language="ts")
    assert no_error(typed, "typescript").text == "42"


# --- async API ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_languages_async_javascript_and_r():
    from e2b import TimeoutException
    from e2b_code_interpreter import AsyncSandbox

    sbx = await AsyncSandbox.create(envs=SANDBOX_ENVS, timeout=300)
    try:
        listed = await sbx.list_code_contexts()
        assert sorted(c.language for c in listed) == ["javascript", "python"]
        seen = []

        async def on_stdout(m):
            seen.append(m.line)

        js = await sbx.run_code('console.log("Hello, World!")', language="js", on_stdout=on_stdout)
        no_error(js, "async js")
        assert seen == ["Hello, World!\n"]
        env = await sbx.run_code("process.env.SANDBAR_E2E_CALL", language="js", envs={"SANDBAR_E2E_CALL": "async"})
        assert env.text == "async"
        with pytest.raises(TimeoutException):
            await sbx.run_code("while (true) {}", language="js", timeout=2)
        assert (await sbx.run_code("6 * 7", language="js", timeout=20)).text == "42"
        r = await sbx.run_code('Sys.getenv("SANDBAR_E2E_SANDBOX_VAR")', language="r")
        assert r_value(r, "async r") == "from-sandbox"
        failed = await sbx.run_code('stop("bad value 17")', language="r")
        assert failed.error is not None and "bad value 17" in failed.error.value
    finally:
        await sbx.kill()
