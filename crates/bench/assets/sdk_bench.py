"""Times the official E2B Python SDKs against the sandbar the bench started.

Usage: python sdk_bench.py create-run|exec|interpreter-create-run[-cold]|interpreter-exec N
Prints one JSON object: {"samples_ms": [...], "sdk": "<package> <version>"}.
The SDKs find the server through the variables `sandbar env` prints. On
failure it exits non-zero with one line on stderr that says what went wrong.
"""

import importlib.metadata
import json
import sys
import time

WARMUP = 1
# The first run_code of a sandbox waits for its kernel to start; later ones
# only for the code. Bounded, so that a server that accepts and never answers
# fails the row instead of hanging the bench.
FIRST_RUN_TIMEOUT_S = 60
RUN_TIMEOUT_S = 30
INTERPRETER_HINT = (
    "the code-interpreter rows need the code-interpreter-v1 template "
    "(sandbar template build code-interpreter-v1) and the sandbar-interpreter "
    "binary beside sandbar, which serves port 49999 in its sandboxes"
)


def timed_creates(n, sandbox_class, first_call, pause_s=0.0, cold=False):
    """Times Sandbox.create() plus a first call, one sandbox at a time.

    The first iteration also pays for the SDK's lazy imports and its first
    connections; it is run but not reported. `pause_s` lets the server refill
    its warm sandbox before each sample; `cold` takes that warm sandbox
    first, so the measured create has to start from nothing.
    """
    samples = []
    for i in range(n + WARMUP):
        time.sleep(pause_s)
        taker = sandbox_class.create() if cold else None
        try:
            start = time.perf_counter()
            sandbox = sandbox_class.create()
            try:
                first_call(sandbox)
                took = (time.perf_counter() - start) * 1000
            finally:
                sandbox.kill()
        finally:
            if taker is not None:
                taker.kill()
        if i >= WARMUP:
            samples.append(took)
    return samples


def create_run(n):
    from e2b import Sandbox

    return timed_creates(n, Sandbox, lambda sb: sb.commands.run("true"))


def exec_true(n):
    from e2b import Sandbox

    sandbox = Sandbox.create()
    try:
        for _ in range(3):
            sandbox.commands.run("true")
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            sandbox.commands.run("true")
            samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        sandbox.kill()


def one_plus_one(sandbox, timeout):
    execution = sandbox.run_code("1+1", timeout=timeout)
    if execution.error is not None or execution.text != "2":
        raise RuntimeError(f"run_code('1+1') answered {execution!r}, not the text '2'")


# Time for the server's warm sandbox to be made again (its kernel included)
# after a create took it.
WARM_REFILL_S = 3


def interpreter_create_run(n, cold=False):
    from e2b_code_interpreter import Sandbox

    return timed_creates(
        n,
        Sandbox,
        lambda sb: one_plus_one(sb, FIRST_RUN_TIMEOUT_S),
        pause_s=WARM_REFILL_S,
        cold=cold,
    )


def interpreter_exec(n):
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create()
    try:
        one_plus_one(sandbox, FIRST_RUN_TIMEOUT_S)
        for _ in range(5):
            one_plus_one(sandbox, RUN_TIMEOUT_S)
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            one_plus_one(sandbox, RUN_TIMEOUT_S)
            samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        sandbox.kill()


MODES = {
    "create-run": (create_run, "e2b"),
    "exec": (exec_true, "e2b"),
    "interpreter-create-run": (interpreter_create_run, "e2b-code-interpreter"),
    "interpreter-create-run-cold": (
        lambda n: interpreter_create_run(n, cold=True),
        "e2b-code-interpreter",
    ),
    "interpreter-exec": (interpreter_exec, "e2b-code-interpreter"),
}


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    measure, package = MODES[mode]
    try:
        samples = measure(n)
    except Exception as e:
        hint = f" ({INTERPRETER_HINT})" if mode.startswith("interpreter") else ""
        print(f"{mode}: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        sys.exit(1)
    version = importlib.metadata.version(package)
    print(json.dumps({"samples_ms": samples, "sdk": f"{package} {version}"}))


if __name__ == "__main__":
    main()
