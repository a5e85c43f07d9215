"""Separate hosts on one machine: a network namespace per worker, joined to this one by a veth pair.

Each namespace `vpw<pid><n>` has one link, `10.231.K.2/30`, whose other end, `10.231.K.1/30`, is
in the root namespace, and nothing else (its own loopback has nothing listening): whatever a
worker reaches, it reaches over its pair. PostgreSQL, RabbitMQ and the simulators listen on
127.0.0.1 only, so a `Forwarder` in the root namespace listens on the pair's host end, on the same
ports, and relays each connection to loopback (PostgreSQL's trust rule and RabbitMQ's guest user,
which are for loopback only, then apply as for any local client). Each namespace resolves the name
`velocity-hub` to its own pair's host end (/etc/netns/<name>/hosts, which `ip netns exec` mounts
over /etc/hosts), so every worker has the same environment, as every host of a deployment has.
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HUB = "velocity-hub"
NETNS_ETC = Path("/etc/netns")


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def _ip_ok(*args: str) -> None:
    result = _ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def why_no_namespaces() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"vpprobe{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` is refused here: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Namespace:
    name: str
    host_address: str  # the pair's end in the root namespace
    address: str  # the pair's end in the namespace

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _free_subnet(first: int) -> int:
    used = _ip("-4", "-o", "addr", "show").stdout
    for k in [*range(first, 250), *range(1, first)]:
        if f"10.231.{k}." not in used:
            return k
    raise RuntimeError("no free 10.231.K.0/30 subnet")


@contextmanager
def namespace(index: int) -> Iterator[Namespace]:
    """A namespace with its veth pair and its hosts file; all of it removed after."""
    name = f"vpw{os.getpid() % 100000}{index}"
    k = _free_subnet(1 + (os.getpid() * 2 + index) % 240)
    host_end, ns_end = f"{name}h", f"{name}n"
    space = Namespace(name, f"10.231.{k}.1", f"10.231.{k}.2")
    etc = NETNS_ETC / name
    try:
        _ip_ok("netns", "add", name)
        _ip_ok("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip_ok("link", "set", ns_end, "netns", name)
        _ip_ok("addr", "add", f"{space.host_address}/30", "dev", host_end)
        _ip_ok("link", "set", host_end, "up")
        for args in (("addr", "add", f"{space.address}/30", "dev", ns_end), ("link", "set", ns_end, "up"), ("link", "set", "lo", "up")):
            _ip_ok("netns", "exec", name, "ip", *args)
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{space.host_address} {HUB}\n")
        yield space
    finally:
        _ip("netns", "del", name)  # takes the namespace's end of the pair, and so the pair
        _ip("link", "del", host_end)
        shutil.rmtree(etc, ignore_errors=True)


class Forwarder(socketserver.ThreadingTCPServer):
    """Relays every connection made to (address, port) to 127.0.0.1:port; counts them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.connections = 0
        super().__init__((address, port), _Relay)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Relay(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        with socket.create_connection(self.server.target, timeout=10) as upstream:
            upstream.settimeout(None)
            self.request.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
            back.start()
            _pump(self.request, upstream)
            back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@contextmanager
def forwarders(address: str, ports: list[int]) -> Iterator[dict[int, Forwarder]]:
    with ExitStack() as stack:
        relays = {}
        for port in ports:
            relays[port] = Forwarder(address, port)
            stack.callback(relays[port].close)
        yield relays
