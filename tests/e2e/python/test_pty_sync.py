"""PTY sessions through the official Python SDK, sync API."""

import re
import threading

import pytest

from e2b import CommandExitException, PtySize

from conftest import DEFAULT_USER, wait_for


class Terminal:
    """A PTY whose output a background thread collects."""

    def __init__(self, sandbox, **opts):
        self.sandbox = sandbox
        self.handle = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=30, **opts)
        self.output = b""
        self.error = None
        self._n = 0
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self):
        try:
            self.handle.wait(on_pty=self._append)
        except Exception as e:  # the session's end, kept for the test to check
            self.error = e

    def _append(self, data: bytes):
        self.output += data

    def run(self, line: str) -> str:
        """Types a line; returns what it printed between two markers.

        The marker is split by quotes in the typed line so the terminal's echo
        of the input never matches.
        """
        self._n += 1
        tag = f"MK{self._n}X{id(self)}"
        half = len(tag) // 2
        typed = f"{tag[:half]}''{tag[half:]}"
        self.sandbox.pty.send_stdin(self.handle.pid, f"echo {typed}B; {line}; echo {typed}E\n".encode())
        pattern = re.compile(rf"{tag}B\r?\n(.*?){tag}E", re.S)

        def found():
            # A tuple, so that empty output still counts as found.
            m = pattern.search(self.output.decode(errors="replace"))
            return m and (m.group(1),)

        return wait_for(found, f"PTY output of {line!r}")[0].replace("\r", "")

    def ended(self, timeout: float = 5.0):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "PTY session did not end"
        return self.error


def test_pty_size_input_resize_kill(sandbox):
    term = Terminal(sandbox)
    assert term.run("stty size").strip() == "24 80"
    assert term.run("echo $TERM; whoami").strip() == f"xterm-256color\n{DEFAULT_USER}"
    sandbox.pty.resize(term.handle.pid, PtySize(rows=40, cols=132))
    assert term.run("stty size").strip() == "40 132"
    assert sandbox.pty.kill(term.handle.pid) is True
    assert isinstance(term.ended(), CommandExitException)
    assert sandbox.pty.kill(term.handle.pid) is False


def test_pty_exit_code(sandbox):
    term = Terminal(sandbox, user="root", cwd="/tmp")
    assert term.run("whoami; pwd").strip() == "root\n/tmp"
    sandbox.pty.send_stdin(term.handle.pid, b"exit 7\n")
    err = term.ended()
    assert isinstance(err, CommandExitException)
    assert err.exit_code == 7
