"""`make dev` as a developer uses it: in a terminal, up with the UI, the simulators and the
exception service, then Ctrl-C. Everything it started stops, the service cleanly; nothing is left
holding a port."""

import os
import pty
import select
import signal
import time
from pathlib import Path

import httpx
import pytest

from velocity_platform_tests.conftest import PROJECT
from velocity_platform.simulators.serve import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0


def answers(port: int, path: str = "/") -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
    except httpx.TransportError:
        return False
    return True


class Terminal:
    """A process on a pseudo-terminal, its output collected as it comes."""

    def __init__(self, argv: list[str], cwd: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the command
            os.chdir(cwd)
            os.execvp(argv[0], argv)
        self.output = b""
        self.ended = False

    def read_until(self, done, what: str) -> None:
        """Collect output until `done()` holds (polled between reads of the terminal)."""
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.tail()}"
            readable, _, _ = select.select([self.fd], [], [], 0.2)
            if readable:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # the other side closed: the command ended
                    return

    def press_ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def exited(self) -> bool:
        if not self.ended:
            self.ended = os.waitpid(self.pid, os.WNOHANG)[0] == self.pid
        return self.ended

    def tail(self) -> str:
        return self.output.decode(errors="replace")[-3000:]


def test_ctrl_c_stops_everything_make_dev_started(tmp_path):
    ports = {name: free_port() for name in ("UI_PORT", "ERP_PORT", "WMS_PORT", "DELTAS_METRICS_PORT")}
    # Its own state directory and ports, so it shares nothing with a checkout's `make dev`.
    argv = ["make", "--no-print-directory", "dev", f"STATE_DIR={tmp_path / 'state'}", *(f"{k}={v}" for k, v in ports.items())]
    terminal = Terminal(argv, PROJECT)
    try:
        terminal.read_until(
            lambda: b"deltas: ready" in terminal.output and answers(ports["UI_PORT"], "/server_info"),
            "the UI and the exception service to be up",
        )
        assert answers(ports["ERP_PORT"], "/healthz") and answers(ports["DELTAS_METRICS_PORT"], "/metrics")
        terminal.press_ctrl_c()
        terminal.read_until(terminal.exited, "make dev to end")
        assert b"velocity-platform deltas: stopped" in terminal.output, terminal.tail()
        left = [name for name, port in ports.items() if answers(port, "/healthz")]
        assert left == [], f"still answering after Ctrl-C: {left}"
    finally:
        if not terminal.exited():
            os.kill(terminal.pid, signal.SIGKILL)
