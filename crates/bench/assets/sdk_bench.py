"""Times the official E2B Python SDKs against the sandbar the bench started.

Usage: python sdk_bench.py MODE N, MODE one of create-run, exec,
interpreter-create-run[-cold], interpreter-exec,
interpreter-first-run-LANG (python, javascript, r, java),
interpreter-kernel-LANG (python, javascript, r, java, bash).
Prints one JSON object: {"samples_ms": [...], "sdk": "<package> <version>"},
with "memory_mib": [...] too for the kernel modes.
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


# Code whose value each language prints as the text `2` (R as `[1] 2`), and
# code that gives the kernel's own anonymous memory in KiB (Pss_Anon of
# /proc/self/smaps_rollup: what it holds privately, beyond the shared
# file-backed pages of its binary and libraries).
LANGUAGE_CODE = {
    "python": (
        "1+1",
        "int(next(l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('Pss_Anon:')))",
    ),
    "javascript": (
        "1+1",
        "Number(Deno.readTextFileSync('/proc/self/smaps_rollup').match(/^Pss_Anon:\\s+(\\d+)/m)[1])",
    ),
    "r": (
        "1+1",
        'as.numeric(gsub("[^0-9]", "", grep("^Pss_Anon:", readLines("/proc/self/smaps_rollup"), value = TRUE)))',
    ),
    "java": (
        "1+1",
        'java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/smaps_rollup")).stream()'
        '.filter(l -> l.startsWith("Pss_Anon:")).findFirst().get().replaceAll("[^0-9]", "")',
    ),
    # bash_kernel is a Python process driving a bash: the Python side is
    # the kernel's cost.
    "bash": (
        "echo 2",
        "grep Pss_Anon /proc/$PPID/smaps_rollup | tr -dc 0-9",
    ),
}


def value_of(execution, what):
    """The text of an execution's value (R shows `[1] x`; bash prints it)."""
    if execution.error is not None:
        raise RuntimeError(f"{what}: {execution.error.name}: {execution.error.value}")
    if execution.results:
        text = execution.results[0].text or ""
    else:
        text = "".join(execution.logs.stdout)
    return text.strip().removeprefix("[1] ").strip('"')


# A warm sandbox's kernels (Python and JavaScript) boot in parallel on a
# busy machine: time for the server to make one again after a create took it.
WARM_KERNELS_REFILL_S = 8


def first_run(language):
    """Sandbox.create() (a warm sandbox), then the time of the first
    run_code in `language` alone: no kernel boot for the default languages,
    the kernel's boot for the others."""

    def measure(n):
        from e2b_code_interpreter import Sandbox

        code, _ = LANGUAGE_CODE[language]
        samples = []
        for i in range(n + WARMUP):
            time.sleep(WARM_KERNELS_REFILL_S)
            sandbox = Sandbox.create()
            try:
                start = time.perf_counter()
                execution = sandbox.run_code(code, language=language, timeout=FIRST_RUN_TIMEOUT_S)
                took = (time.perf_counter() - start) * 1000
                if value_of(execution, f"first {language} run") != "2":
                    raise RuntimeError(f"{code!r} in {language} answered {execution!r}")
            finally:
                sandbox.kill()
            if i >= WARMUP:
                samples.append(took)
        return samples

    return measure


def kernel_start(language):
    """In one sandbox, create_code_context(language) N times: the server
    answers once the new kernel does, so this is the kernel's start. Then
    the kernel's own anonymous memory after one cell."""

    def measure(n):
        from e2b_code_interpreter import Sandbox

        code, memory_code = LANGUAGE_CODE[language]
        sandbox = Sandbox.create()
        samples, memory = [], []
        try:
            for i in range(n + WARMUP):
                start = time.perf_counter()
                context = sandbox.create_code_context(language=language)
                took = (time.perf_counter() - start) * 1000
                try:
                    first = sandbox.run_code(code, context=context, timeout=RUN_TIMEOUT_S)
                    if value_of(first, f"{language} kernel") != "2":
                        raise RuntimeError(f"{code!r} in a {language} context answered {first!r}")
                    kib = value_of(
                        sandbox.run_code(memory_code, context=context, timeout=RUN_TIMEOUT_S),
                        f"{language} kernel memory",
                    )
                finally:
                    sandbox.remove_code_context(context)
                if i >= WARMUP:
                    samples.append(took)
                    memory.append(int(kib) / 1024)
        finally:
            sandbox.kill()
        return samples, memory

    return measure


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
for _language in ("python", "javascript", "r", "java"):
    MODES[f"interpreter-first-run-{_language}"] = (first_run(_language), "e2b-code-interpreter")
for _language in LANGUAGE_CODE:
    MODES[f"interpreter-kernel-{_language}"] = (kernel_start(_language), "e2b-code-interpreter")


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    measure, package = MODES[mode]
    try:
        measured = measure(n)
    except Exception as e:
        hint = f" ({INTERPRETER_HINT})" if mode.startswith("interpreter") else ""
        print(f"{mode}: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        sys.exit(1)
    out = {}
    if isinstance(measured, tuple):
        measured, out["memory_mib"] = measured
    version = importlib.metadata.version(package)
    print(json.dumps({"samples_ms": measured, "sdk": f"{package} {version}", **out}))


if __name__ == "__main__":
    main()
