"""Times the official E2B Python SDK against the sandbar the bench started.

Usage: python sdk_bench.py create-run|exec N
Prints one JSON object: {"samples_ms": [...], "sdk": "<e2b version>"}.
The SDK finds the server through the variables `sandbar env` prints.
"""

import importlib.metadata
import json
import sys
import time

from e2b import Sandbox

WARMUP = 1


def create_run(n):
    # The first iteration also pays for the SDK's lazy imports and its first
    # connections; it is run but not reported.
    samples = []
    for i in range(n + WARMUP):
        start = time.perf_counter()
        sandbox = Sandbox.create()
        try:
            sandbox.commands.run("true")
            took = (time.perf_counter() - start) * 1000
        finally:
            sandbox.kill()
        if i >= WARMUP:
            samples.append(took)
    return samples


def exec_true(n):
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


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    samples = {"create-run": create_run, "exec": exec_true}[mode](n)
    print(json.dumps({"samples_ms": samples, "sdk": importlib.metadata.version("e2b")}))


if __name__ == "__main__":
    main()
