"""The code-interpreter SDK against the kernel server of a code-interpreter-v1
sandbox, with the sync and the async API: state, streaming output, PNG
figures, errors, contexts (python and bash), restarts, timeouts and env vars.

It needs a sandbar server, so it is skipped against a standalone envd. One
sandbox serves the sync tests and one the async tests; tests that could
disturb the default context work in contexts of their own.
"""

import base64
import re
import time

import pytest
import pytest_asyncio

from conftest import DEFAULT_HOME, SANDBOX_ENVS, TARGET

pytestmark = pytest.mark.skipif(
    TARGET != "sandbar", reason="needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Any CSI sequence: IPython colours tracebacks unless told not to.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STREAM_CODE = 'import time\nprint("first", flush=True)\ntime.sleep(1.5)\nprint("second", flush=True)'
FAILING_CODE = 'def fails():\n    raise ValueError("bad value 17")\n\nfails()'
PLOT_CODE = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
READ_ENVS = (
    "import os\n"
    '(os.environ.get("SANDBAR_E2E_CALL", "<unset>"), os.environ.get("SANDBAR_E2E_OVERRIDE"),'
    ' os.environ.get("SANDBAR_E2E_SANDBOX_VAR"))'
)


def no_error(execution, what: str):
    err = execution.error
    assert err is None, f"{what}: {err.name}: {err.value}\n{err.traceback}"
    return execution


def check_png(execution):
    no_error(execution, "plot")
    pngs = [r.png for r in execution.results if r.png]
    assert len(pngs) == 1, [list(r.formats()) for r in execution.results]
    png = base64.b64decode(pngs[0])
    assert len(png) > 1000, f"a {len(png)}-byte PNG is too small for a plot"
    assert png[:8] == PNG_MAGIC


def check_traceback(execution):
    err = execution.error
    assert err is not None, "expected an error"
    assert err.name == "ValueError"
    assert err.value == "bad value 17"
    assert isinstance(err.traceback, str)
    assert 'raise ValueError("bad value 17")' in err.traceback, err.traceback
    assert not ANSI.search(err.traceback), f"ANSI escapes in the traceback:\n{err.traceback!r}"


# --- sync API -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ci():
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(envs=SANDBOX_ENVS, timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
def new_context(ci):
    """Makes contexts that are removed after the test: every kernel holds tens
    of MiB, and the sandbox's memory limit would start killing them."""
    made = []

    def make(**kwargs):
        context = ci.create_code_context(**kwargs)
        made.append(context)
        return context

    yield make
    for context in made:
        ci.remove_code_context(context)


def test_code_interpreter_default_context_is_listed(ci):
    listed = ci.list_code_contexts()
    assert any(c.language == "python" and c.cwd == DEFAULT_HOME for c in listed), listed


def test_code_interpreter_keeps_state(ci):
    first = no_error(ci.run_code("x = 1"), "x = 1")
    assert first.text is None
    assert no_error(ci.run_code("x + 1"), "x + 1").text == "2"


def test_code_interpreter_streams_stdout(ci):
    seen = []
    execution = ci.run_code(STREAM_CODE, on_stdout=lambda m: seen.append((m.line, time.monotonic())))
    done = time.monotonic()
    no_error(execution, "print, sleep, print")
    assert [line for line, _ in seen] == ["first\n", "second\n"]
    assert execution.logs.stdout == ["first\n", "second\n"]
    # A server that buffers until the cell ends delivers both at the end.
    early = done - seen[0][1]
    assert early >= 1.0, f'"first" arrived {early:.3f} s before run_code returned'


def test_code_interpreter_stderr(ci):
    seen = []
    execution = ci.run_code(
        'import sys\nprint("to stderr", file=sys.stderr, flush=True)', on_stderr=seen.append
    )
    no_error(execution, "stderr")
    assert execution.logs.stderr == ["to stderr\n"]
    assert [(m.line, m.error) for m in seen] == [("to stderr\n", True)]


def test_code_interpreter_png(ci):
    check_png(ci.run_code(PLOT_CODE))


def test_code_interpreter_error_traceback(ci):
    no_error(ci.run_code("before_error = 3"), "set")
    check_traceback(ci.run_code(FAILING_CODE))
    assert ci.run_code("before_error").text == "3"


def test_code_interpreter_display_and_main_result(ci):
    execution = no_error(
        ci.run_code('from IPython.display import display\ndisplay(123)\n"last"'), "display"
    )
    # A str's text is its content, not its repr, as with E2B's server.
    assert [(r.text, r.is_main_result) for r in execution.results] == [("123", False), ("last", True)]
    assert execution.text == "last"
    counts = [ci.run_code("1").execution_count, ci.run_code("2").execution_count]
    assert counts[1] == counts[0] + 1


def test_code_interpreter_mime_extra_and_dataframe(ci):
    bundle = {"text/plain": "p", "text/html": "<i>h</i>", "application/x-sandbar-e2e": "custom"}
    execution = no_error(
        ci.run_code(
            "from IPython.display import display\n"
            f"display({bundle!r}, raw=True)\n"
            'import pandas as pd\npd.DataFrame({"alpha": [1, 2]})'
        ),
        "MIME bundle and DataFrame",
    )
    shown, frame = execution.results
    assert (shown.text, shown.html) == ("p", "<i>h</i>")
    # MIME types the SDK has no field for arrive under `extra`.
    assert shown.extra == {"application/x-sandbar-e2e": "custom"}
    assert frame.is_main_result
    assert "<table" in (frame.html or "")
    assert isinstance(frame.data, dict) and "alpha" in str(frame.data), frame.data


def test_code_interpreter_contexts_are_isolated(ci, new_context):
    a, b = new_context(), new_context()
    assert a.id != b.id and a.language == "python"
    no_error(ci.run_code("only_in_a = 99", context=a), "set in a")
    assert ci.run_code("only_in_a", context=a).text == "99"
    assert ci.run_code("only_in_a", context=b).error.name == "NameError"
    assert ci.run_code("only_in_a").error.name == "NameError"


def test_code_interpreter_restart_clears_state(ci, new_context):
    c = new_context()
    no_error(ci.run_code("kept = 1", context=c), "set")
    ci.restart_code_context(c)
    assert ci.run_code("kept", context=c).error.name == "NameError"
    assert ci.run_code("6 * 7", context=c).text == "42"


def test_code_interpreter_python_context_in_its_cwd(ci, new_context):
    home = ci.run_code("import os; os.getcwd()")
    assert home.text == DEFAULT_HOME, home
    ci.commands.run("mkdir -p /tmp/py-cwd-ctx")
    c = new_context(language="python", cwd="/tmp/py-cwd-ctx")
    assert (c.language, c.cwd) == ("python", "/tmp/py-cwd-ctx")
    assert ci.run_code("import os; os.getcwd()", context=c).text == "/tmp/py-cwd-ctx"
    # Relative paths resolve there.
    no_error(ci.run_code("open('rel.txt', 'w').write('relative')", context=c), "write")
    assert ci.files.read("/tmp/py-cwd-ctx/rel.txt") == "relative"
    # The default context is not moved by it.
    assert ci.run_code("os.getcwd()").text == DEFAULT_HOME


def test_code_interpreter_bash(ci, new_context):
    c = new_context(language="bash", cwd="/tmp")
    assert (c.language, c.cwd) == ("bash", "/tmp")
    ok = no_error(ci.run_code("echo $((6*7)); pwd", context=c), "echo")
    assert "".join(ok.logs.stdout) == "42\n/tmp\n"
    assert ci.run_code("ls /no/such/dir", context=c).error is not None


def test_code_interpreter_context_errors(ci):
    from e2b import InvalidArgumentException, NotFoundException, SandboxException
    from e2b_code_interpreter import Context

    with pytest.raises(SandboxException, match="400"):
        ci.create_code_context(language="cobol")
    with pytest.raises(SandboxException, match="400"):
        ci.create_code_context(cwd="/no/such/dir")
    ghost = Context(context_id="no-such-context", language="python", cwd=DEFAULT_HOME)
    with pytest.raises(NotFoundException):
        ci.run_code("1", context=ghost)
    with pytest.raises(InvalidArgumentException):
        ci.run_code("1", context=ghost, language="python")
    c = ci.create_code_context()
    assert any(x.id == c.id for x in ci.list_code_contexts())
    ci.remove_code_context(c)
    assert all(x.id != c.id for x in ci.list_code_contexts())


def test_code_interpreter_timeout_interrupts(ci, new_context):
    from e2b import TimeoutException

    c = new_context()
    no_error(ci.run_code('survivor = "still here"', context=c), "set")
    start = time.monotonic()
    with pytest.raises(TimeoutException):
        ci.run_code("import time\ntime.sleep(60)", context=c, timeout=2)
    assert time.monotonic() - start < 10
    start = time.monotonic()
    after = no_error(ci.run_code("1 + 1", context=c, timeout=20), "1 + 1 after the timeout")
    took = time.monotonic() - start
    assert after.text == "2"
    assert took < 5, f"the next run took {took:.1f} s: the sleep was not interrupted"
    assert ci.run_code("survivor", context=c).text == "still here"


def test_code_interpreter_env_vars(ci):
    during = no_error(
        ci.run_code(READ_ENVS, envs={"SANDBAR_E2E_CALL": "per-call", "SANDBAR_E2E_OVERRIDE": "call-level"}),
        "per-call envs",
    )
    assert during.text == "('per-call', 'call-level', 'from-sandbox')"
    after = ci.run_code(READ_ENVS)
    assert after.text == "('<unset>', 'sandbox-level', 'from-sandbox')"


def test_code_interpreter_kernel_death(ci, new_context):
    c = new_context()
    no_error(ci.run_code("bystander = 8"), "set in the default context")
    no_error(ci.run_code("doomed = 1", context=c), "set")
    died = ci.run_code("import os\nos.kill(os.getpid(), 9)", context=c, timeout=30)
    assert died.error is not None and died.error.name == "KernelDied", died
    assert died.error.value
    deadline = time.monotonic() + 15
    while True:
        try:
            if ci.run_code("1 + 1", context=c, timeout=10).text == "2":
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the context did not run code within 15 s of its kernel dying"
        time.sleep(0.25)
    assert ci.run_code("doomed", context=c).error.name == "NameError"
    assert ci.run_code("bystander").text == "8"


# --- async API ----------------------------------------------------------------


@pytest_asyncio.fixture(scope="class", loop_scope="class")
async def aci():
    from e2b_code_interpreter import AsyncSandbox

    sbx = await AsyncSandbox.create(envs=SANDBOX_ENVS, timeout=300)
    try:
        yield sbx
    finally:
        await sbx.kill()


@pytest.mark.asyncio(loop_scope="class")
class TestCodeInterpreterAsync:
    async def test_code_interpreter_async_state_and_streaming(self, aci):
        no_error(await aci.run_code("y = 20"), "y = 20")
        seen = []

        async def on_stdout(m):
            seen.append((m.line, time.monotonic()))

        execution = no_error(await aci.run_code(STREAM_CODE, on_stdout=on_stdout), "stream")
        done = time.monotonic()
        assert [line for line, _ in seen] == ["first\n", "second\n"]
        assert done - seen[0][1] >= 1.0, f'"first" arrived {done - seen[0][1]:.3f} s before the end'
        assert execution.logs.stdout == ["first\n", "second\n"]
        assert (await aci.run_code("y + 22")).text == "42"

    async def test_code_interpreter_async_png_and_error(self, aci):
        check_png(await aci.run_code(PLOT_CODE))
        check_traceback(await aci.run_code(FAILING_CODE))

    async def test_code_interpreter_async_contexts(self, aci):
        a = await aci.create_code_context()
        b = await aci.create_code_context(language="bash")
        try:
            no_error(await aci.run_code("secret = 7", context=a), "set in a")
            assert (await aci.run_code("secret", context=a)).text == "7"
            assert (await aci.run_code("secret")).error.name == "NameError"
            await aci.restart_code_context(a)
            assert (await aci.run_code("secret", context=a)).error.name == "NameError"
            shell = no_error(await aci.run_code("echo $((6*7))", context=b), "bash")
            assert "".join(shell.logs.stdout) == "42\n"
        finally:
            await aci.remove_code_context(a)
            await aci.remove_code_context(b)

    async def test_code_interpreter_async_timeout_and_envs(self, aci):
        from e2b import TimeoutException

        c = await aci.create_code_context()
        try:
            no_error(await aci.run_code("survivor = 3", context=c), "set")
            with pytest.raises(TimeoutException):
                await aci.run_code("import time\ntime.sleep(60)", context=c, timeout=2)
            start = time.monotonic()
            assert (await aci.run_code("survivor + 1", context=c, timeout=20)).text == "4"
            took = time.monotonic() - start
            assert took < 5, f"the next run took {took:.1f} s: the sleep was not interrupted"
        finally:
            await aci.remove_code_context(c)
        during = await aci.run_code(READ_ENVS, envs={"SANDBAR_E2E_CALL": "async"})
        assert during.text == "('async', 'sandbox-level', 'from-sandbox')"
        assert (await aci.run_code(READ_ENVS)).text == "('<unset>', 'sandbox-level', 'from-sandbox')"
