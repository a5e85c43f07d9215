"""HTTP plumbing shared by the ERP and WMS simulators (auth, JSON, cursors, faults, counters)."""

from __future__ import annotations

import base64
import hmac
import logging
import random
import threading
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

JSON = "application/json"


class SimulatedDrop(Exception):
    """Raised after a response has started, so uvicorn aborts the connection mid-message."""


class _HideSimulatedDrops(logging.Filter):
    # uvicorn logs every aborted response as an application error; ours are on purpose.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDrop)


_filter = _HideSimulatedDrops()


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _filter not in logger.filters:
        logger.addFilter(_filter)


class BadRequest(Exception):
    """A client error with a message for the JSON body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    # Constant-time compare; the token itself never appears in any response.
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def unauthorized() -> Response:
    return error_response(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})


class DropResponse(Response):
    """Declares the full Content-Length, sends only ``sent_bytes`` of the body, then aborts."""

    def __init__(self, body: bytes, status: int = 200, sent_bytes: int | None = None) -> None:
        self.body = body
        self.status_code = status
        self.sent_bytes = len(body) // 3 if sent_bytes is None else sent_bytes
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        if self.sent_bytes:
            await send({"type": "http.response.body", "body": self.body[: self.sent_bytes], "more_body": True})
        raise SimulatedDrop("simulated connection drop")


class FaultDice:
    """One seeded draw per request attempt, so a retry of the same request can succeed."""

    def __init__(self, seed: int, salt: int) -> None:
        self._rng = random.Random(seed * 1_000_003 + salt)
        self._lock = threading.Lock()

    def roll(self, rates: Sequence[tuple[str, float]]) -> str | None:
        with self._lock:
            u = self._rng.random()
        acc = 0.0
        for kind, rate in rates:
            acc += rate
            if u < acc:
                return kind
        return None

    def choice(self, options: Sequence[Any]) -> Any:
        with self._lock:
            return self._rng.choice(options)


def validate_rates(obj: Any, names: Sequence[str]) -> None:
    total = 0.0
    for name in names:
        v = float(getattr(obj, name))
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {v}")
        total += v
    if total > 1.0:
        raise ValueError(f"the per-request fault rates {list(names)} sum to {total} > 1")


def stable_uniform(*parts: Any) -> float:
    """A uniform in [0, 1) that is a pure function of its arguments (for stable data faults)."""
    return zlib.crc32(repr(parts).encode()) / 2**32


class Counters:
    """Thread-safe nested counters: counters.add("requests", "transactions", "200")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = defaultdict(dict)

    def add(self, group: str, *path: str, n: int = 1) -> None:
        with self._lock:
            node = self._data[group]
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = node.get(path[-1], 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return orjson.loads(orjson.dumps(self._data))


class LoadMeter:
    """How hard clients press: the most requests in flight at once and within any one second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._recent: deque[float] = deque()
        self._peak_per_second = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        now = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            self._peak_per_second = max(self._peak_per_second, len(self._recent))
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"peak_in_flight": self._peak_in_flight, "peak_per_second": self._peak_per_second}


def encode_cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BadRequest("invalid cursor") from exc


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer, got {raw!r}") from None
    if not 1 <= limit <= maximum:
        raise BadRequest(f"limit must be between 1 and {maximum}, got {limit}")
    return limit
