"""What the ERP and WMS clients share: one guarded HTTP client per upstream.

- Retries (tenacity): exponential backoff with full jitter, bounded attempts, `Retry-After`
  honoured, and only for failures that can pass (connection errors, timeouts, 429, 5xx, a body
  the caller cannot read). A 4xx answer other than 429 is final and raised at once with the
  upstream's message. A request that is not idempotent (a POST without an Idempotency-Key) is
  retried only when it certainly never reached the upstream.
- Rate limiting (pyrate-limiter): a ceiling of requests per second per upstream, shared by every
  client of that upstream in the process, plus a semaphore bounding concurrent requests.
- A circuit breaker per upstream (pybreaker): after `breaker_fail_max` consecutive failed
  attempts it opens; every request then fails at once with a clear message, until the
  cool-down has passed and a trial request succeeds.
- Secrets: the bearer token lives in the client's headers only and is only ever sent to the
  configured origin (no redirects are followed; a request to another origin is refused). Texts
  that come back from an upstream are scrubbed of it before they reach a message or a log.
- A cap on the size of a response body, enforced while streaming it.

`AsyncUpstreamClient` is the same client on httpx.AsyncClient, for the resident exception
service: the same RetryPolicy and UpstreamLimits, and the same guard of the upstream (one
breaker and one rate limiter per upstream and process, shared with the sync clients); only the
waiting is awaited instead of slept (an asyncio semaphore for the concurrency bound, the
limiter's async acquire, asyncio.sleep between attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import ipaddress
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, Self

import httpx
import pybreaker
import tenacity
from pyrate_limiter import Duration, Limiter, Rate

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Transport errors after which a request certainly never reached the upstream.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_REDACTED = "[redacted]"


class UpstreamError(RuntimeError):
    """An upstream answered in a way that retrying will not fix, or kept failing past the budget."""

    def __init__(self, system: str, message: str, status: int | None = None):
        super().__init__(f"{system}: {message}")
        self.system = system
        self.status = status


class CircuitOpen(UpstreamError):
    """The upstream's circuit breaker is open: no request was made."""


class ResponseTooLarge(UpstreamError):
    """A response body went over the configured cap; it was not read further."""


class BodyStillInvalid(UpstreamError):
    """Every attempt answered 200 with a body the caller could not read; the last answer is kept."""

    def __init__(self, system: str, message: str, answer: HttpAnswer, reason: str, attempts: int):
        super().__init__(system, message, answer.status_code)
        self.answer = answer
        self.reason = reason
        self.attempts = attempts


class RetryableStatus(Exception):
    def __init__(self, answer: HttpAnswer):
        super().__init__(f"HTTP {answer.status_code} from {answer.path}")
        self.answer = answer


class InvalidBody(Exception):
    """Raised by a body reader: the answer arrived but cannot be read (e.g. truncated JSON)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# What a call raises when its last attempt failed in a way worth retrying: turned into an UpstreamError.
GAVE_UP = (RetryableStatus, httpx.TransportError, InvalidBody)


@dataclass(frozen=True)
class HttpAnswer:
    """A fully read response (the body was streamed under the size cap)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    path: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_wait_s: float = 0.2
    max_wait_s: float = 10.0
    max_retry_after_s: float = 30.0
    # An answer whose body cannot be read is fetched at most this often (within max_attempts): a
    # body broken the same way every time is the upstream's data, not the network.
    max_unreadable_attempts: int = 3


@dataclass(frozen=True)
class UpstreamLimits:
    """How hard we may press one upstream, and when we stop trying for a while."""

    requests_per_second: float = 50.0  # 0 means no ceiling
    max_concurrent_requests: int = 4
    breaker_fail_max: int = 8  # consecutive failed attempts (transport errors, 5xx) that open the breaker
    breaker_reset_s: float = 30.0  # cool-down before a trial request may close it again


@dataclass
class RetryStats:
    """How hard a client had to work; surfaced as asset metadata and in reliability reports."""

    requests: int = 0
    retries: int = 0
    reasons: Counter = field(default_factory=Counter)  # retried failures by kind ("HTTP 429", "ReadTimeout", ...)

    def as_metadata(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries}


# --- the per-upstream guard: rate limit, concurrency bound, circuit breaker ---------------------


class UpstreamGuard:
    """Shared by every client of one upstream in this process (see `guard_for`)."""

    def __init__(self, system: str, limits: UpstreamLimits):
        self.system = system
        self.limits = limits
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=limits.breaker_fail_max, reset_timeout=limits.breaker_reset_s, name=system
        )
        self._slots = threading.BoundedSemaphore(max(1, limits.max_concurrent_requests))
        self._limiter = Limiter(_rate(limits.requests_per_second)) if limits.requests_per_second > 0 else None
        self._async_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self.last_failure = ""
        # Requests of async clients in flight now: what concurrency_utilization reports.
        self.in_flight = 0

    def check_closed(self) -> None:
        """Fail fast while the breaker is open and its cool-down has not passed."""
        if self.breaker.current_state != pybreaker.STATE_OPEN:
            return
        opened_at = self.breaker._state_storage.opened_at  # pybreaker keeps it there; no public getter
        if opened_at is None:
            return
        until = opened_at + dt.timedelta(seconds=self.breaker.reset_timeout)
        if dt.datetime.now(dt.UTC) < until:
            raise CircuitOpen(self.system, self._open_message(until))

    def _open_message(self, until: dt.datetime) -> str:
        return (
            f"circuit breaker open after {self.breaker.fail_max} consecutive failed requests "
            f"(last: {self.last_failure or 'unknown'}); not calling {self.system} until "
            f"{until.strftime('%H:%M:%S')} UTC ({self.breaker.reset_timeout:g} s cool-down). "
            f"Check that {self.system} is up, then re-run the partition."
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One request's turn: under the concurrency bound, then the rate ceiling.

        In that order, so a request goes out right after its token: tokens taken while waiting
        for a slot would let requests bunch up afterwards.
        """
        with self._slots:
            if self._limiter is not None:
                self._limiter.try_acquire(self.system, blocking=True)
            yield

    @contextlib.asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        """`slot` for coroutines: the same bound (an asyncio semaphore per event loop) and the
        same rate limiter, awaited instead of blocking the loop."""
        loop = asyncio.get_running_loop()
        slots = self._async_slots.get(loop)
        if slots is None:
            slots = self._async_slots[loop] = asyncio.Semaphore(max(1, self.limits.max_concurrent_requests))
        async with slots:
            if self._limiter is not None:
                await self._limiter.try_acquire_async(self.system, blocking=True)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def record(self, failure: BaseException | None) -> None:
        """Tell the breaker how an attempt went; raises CircuitOpen when this failure trips it."""
        if failure is not None:
            self.last_failure = _describe(failure)

        def verdict() -> None:
            if failure is not None:
                raise failure

        try:
            self.breaker.call(verdict)
        except pybreaker.CircuitBreakerError:
            until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.breaker.reset_timeout)
            raise CircuitOpen(self.system, self._open_message(until)) from None
        except BaseException as exc:  # the failure itself, re-raised by the breaker
            if exc is not failure:
                raise


def _rate(requests_per_second: float) -> Rate:
    if requests_per_second >= 1:
        return Rate(int(math.floor(requests_per_second)), Duration.SECOND)
    return Rate(1, int(round(1000 / requests_per_second)))


_guards: dict[tuple[str, str, UpstreamLimits], UpstreamGuard] = {}
_guards_lock = threading.Lock()


def guard_for(system: str, base_url: str, limits: UpstreamLimits) -> UpstreamGuard:
    """The guard of an upstream (system and origin): one per process, so every asset shares it."""
    key = (system, _origin(httpx.URL(base_url)), limits)
    with _guards_lock:
        guard = _guards.get(key)
        if guard is None:
            guard = _guards[key] = UpstreamGuard(system, limits)
        return guard


def reset_guards() -> None:
    """Forget every breaker and limiter (a new process starts this way; tests call it)."""
    with _guards_lock:
        _guards.clear()


# --- the client -----------------------------------------------------------------------------


_LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def check_base_url(system: str, base_url: str, allow_plain_http: bool = False) -> httpx.URL:
    """A base URL we are willing to send a bearer token to; the error never echoes credentials."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{system} base URL is not a valid URL ({type(exc).__name__})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{system} base URL must be http(s)://host[:port][/path], got scheme {url.scheme!r}")
    if url.userinfo:
        raise ValueError(f"{system} base URL must not carry credentials; put the token in the environment")
    if url.query or url.fragment:
        raise ValueError(f"{system} base URL must not have a query or fragment")
    if url.scheme == "http" and not _is_loopback(url.host) and not allow_plain_http:
        raise ValueError(
            f"{system} base URL uses plain http to {url.host}; the bearer token would cross the network "
            "unencrypted. Use https:// (or allow_plain_http for a trusted network)."
        )
    return url


class UpstreamClient:
    """An httpx client for one upstream, with retries, limits, the breaker and the size cap."""

    def __init__(
        self,
        system: str,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 30.0,
        verify_tls: bool = True,
        allow_plain_http: bool = False,
        retry: RetryPolicy | None = None,
        limits: UpstreamLimits | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
        token_source: str = "the environment",
        stats: RetryStats | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.system = system
        self.retry = retry or RetryPolicy()
        self.limits = limits or UpstreamLimits()
        self.max_response_bytes = max_response_bytes
        self.token_source = token_source
        self.stats = stats if stats is not None else RetryStats()
        self._sleep = sleep  # tests observe the waits instead of spending them
        url = check_base_url(system, base_url, allow_plain_http)
        self._origin = _origin(url)
        self._secrets = tuple(s for s in (token,) if s)
        self.guard = guard_for(system, base_url, self.limits)
        headers = {"Accept": "application/json", "User-Agent": "velocity-platform"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = self._build_http(
            base_url=str(url).rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            verify=verify_tls,
            follow_redirects=False,  # a redirect could carry the bearer token to another host
            limits=httpx.Limits(max_connections=max(1, self.limits.max_concurrent_requests)),
        )

    def _build_http(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options, event_hooks={"request": [self._only_own_origin]})

    def close(self) -> None:
        self._http.close()

    def _only_own_origin(self, request: httpx.Request) -> None:
        if _origin(request.url) != self._origin:
            raise UpstreamError(
                self.system, f"refused to send a request to another origin than the configured {self.system} URL"
            )

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    # --- one attempt ------------------------------------------------------------------------

    def _send_once(self, method: str, path: str, params: dict | None, content: bytes | None, headers: dict | None) -> HttpAnswer:
        request = self._http.build_request(method, path, params=params, content=content, headers=headers)
        response = self._http.send(request, stream=True)
        try:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                raise self._too_large(method, path, int(declared))
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise self._too_large(method, path, size)
                chunks.append(chunk)
        finally:
            response.close()
        return HttpAnswer(response.status_code, response.headers, b"".join(chunks), path)

    def _too_large(self, method: str, path: str, size: int) -> ResponseTooLarge:
        return ResponseTooLarge(
            self.system,
            f"{method} {path} answered more than {self.max_response_bytes:,} bytes (at least {size:,}); "
            "not read further. Lower the page size (page_limit) or raise max_response_bytes.",
        )

    # --- the public call ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        content: bytes | None = None,
        headers: dict | None = None,
        idempotent: bool | None = None,
        read: Callable[[HttpAnswer], object] | None = None,
        describe: str | None = None,
    ) -> tuple[HttpAnswer, object]:
        """Send until a final answer; returns it (2xx or a final 4xx) with `read(answer)`'s result.

        `read` turns a 2xx body into what the caller needs; raising InvalidBody from it makes
        the answer a retryable failure (the body is fetched again), and BodyStillInvalid is
        raised with the last answer if it never becomes readable. GETs are idempotent; any
        other method only when `idempotent=True` (it carries an Idempotency-Key).
        """
        call = self._call(_Call, method, path, params, content, headers, idempotent, read, describe)
        try:
            return tenacity.Retrying(**self._retry_policy(call, self._sleep))(call.attempt)
        except GAVE_UP as exc:
            raise call.gave_up(exc) from None

    def _call(self, kind: type[_Call], method, path, params, content, headers, idempotent, read, describe) -> _Call:
        """One call's attempt, as `request` and `arequest` both make it."""
        return kind(
            self,
            method,
            path,
            params,
            content,
            headers,
            idempotent=method in ("GET", "HEAD") if idempotent is None else idempotent,
            read=read,
            describe=describe or f"{method} {path}",
        )

    def _retry_policy(self, call: _Call, sleep: Callable) -> dict:
        """When a call is tried again and how long it waits, for tenacity's Retrying and AsyncRetrying alike."""
        return dict(
            stop=tenacity.stop_any(tenacity.stop_after_attempt(self.retry.max_attempts), call.unreadable_too_often),
            wait=_WaitHonouringRetryAfter(self.retry),
            retry=tenacity.retry_if_exception(call.worth_retrying),
            before_sleep=call.count_retry,
            sleep=sleep,
            reraise=True,
        )

    def raise_for_final_status(self, answer: HttpAnswer, describe: str) -> None:
        """Turn a final non-2xx answer into an UpstreamError that names the fix."""
        if answer.status_code < 300:
            return
        if answer.status_code < 400:
            raise UpstreamError(
                self.system,
                f"{describe} answered a redirect (HTTP {answer.status_code}); redirects are not followed so the "
                f"bearer token never leaves the configured host. Point the {self.system} URL at the final address.",
                answer.status_code,
            )
        detail = self.redact(answer.text[:300])
        hint = {
            401: f" (the bearer token was refused: check {self.token_source})",
            403: f" (the token from {self.token_source} lacks permission)",
        }.get(answer.status_code, "")
        raise UpstreamError(self.system, f"{describe} answered HTTP {answer.status_code}{hint}: {detail}", answer.status_code)


# --- what the ERP and WMS clients share ----------------------------------------------------------

# A listing's pages double in size after this many full pages (UpstreamApiClient.page_size).
PAGES_PER_DOUBLING = 8


@dataclass
class UpstreamApiClient:
    """The base of the ERP and WMS clients: their settings, one guarded client, a context manager.

    A subclass names its SYSTEM and adds the calls of its API; the token's origin (for messages
    about a refused token) defaults to the subclass's environment variable.
    """

    SYSTEM: ClassVar[str]
    CLIENT: ClassVar[type[UpstreamClient]] = UpstreamClient  # the async subclass swaps in AsyncUpstreamClient
    base_url: str
    token: str | None
    _: KW_ONLY
    timeout_s: float = 30.0
    page_limit: int = 250  # as Settings.page_limit, for clients built without settings
    page_limit_max: int = 5000  # as Settings.page_limit_max
    max_response_bytes: int = 64 * 1024 * 1024
    verify_tls: bool = True
    allow_plain_http: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: UpstreamLimits = field(default_factory=UpstreamLimits)
    token_source: str = "the environment"
    stats: RetryStats = field(default_factory=RetryStats)

    def __post_init__(self) -> None:
        self._http = self.CLIENT(
            self.SYSTEM,
            self.base_url,
            self.token,
            timeout_s=self.timeout_s,
            verify_tls=self.verify_tls,
            allow_plain_http=self.allow_plain_http,
            retry=self.retry,
            limits=self.limits,
            max_response_bytes=self.max_response_bytes,
            token_source=self.token_source,
            stats=self.stats,
        )

    def page_size(self, page_no: int) -> int:
        """Records to ask for on the `page_no`-th page (from 1) of a listing: `page_limit` for the
        first PAGES_PER_DOUBLING pages, doubled every PAGES_PER_DOUBLING pages after, up to
        `page_limit_max`. A day of the demo's size (~1,500 documents) stays in pages of 250, a sixth
        of a day each; scenario L's day (239,276 documents) takes 76 requests instead of 958, which
        the request ceiling (50 a second) held at 21.7 s (docs/reliability.md)."""
        grown = self.page_limit << min((page_no - 1) // PAGES_PER_DOUBLING, 16)
        return max(1, min(grown, max(self.page_limit, self.page_limit_max)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str | int], read: Callable[[HttpAnswer], Any] | None = None) -> tuple[HttpAnswer, Any]:
        """GET until a final answer; a final non-2xx raises UpstreamError naming the fix."""
        describe = f"GET {path}"
        answer, parsed = self._http.request("GET", path, params=params, read=read, describe=describe)
        self._http.raise_for_final_status(answer, describe)
        return answer, parsed


class AsyncUpstreamClient(UpstreamClient):
    """UpstreamClient on httpx.AsyncClient: the same policy objects, guard, checks and errors."""

    def __init__(self, *args: Any, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._async_sleep = sleep

    def _build_http(self, **options: Any) -> httpx.AsyncClient:  # type: ignore[override]
        async def only_own_origin(request: httpx.Request) -> None:
            self._only_own_origin(request)

        return httpx.AsyncClient(**options, event_hooks={"request": [only_own_origin]})

    async def aclose(self) -> None:
        await self._http.aclose()

    def close(self) -> None:  # an AsyncClient is closed with aclose()
        raise TypeError("close an AsyncUpstreamClient with `await client.aclose()`")

    async def _send_once_async(
        self, method: str, path: str, params: dict | None, content: bytes | None, headers: dict | None
    ) -> HttpAnswer:
        request = self._http.build_request(method, path, params=params, content=content, headers=headers)
        response = await self._http.send(request, stream=True)
        try:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                raise self._too_large(method, path, int(declared))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise self._too_large(method, path, size)
                chunks.append(chunk)
        finally:
            await response.aclose()
        return HttpAnswer(response.status_code, response.headers, b"".join(chunks), path)

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        content: bytes | None = None,
        headers: dict | None = None,
        idempotent: bool | None = None,
        read: Callable[[HttpAnswer], object] | None = None,
        describe: str | None = None,
    ) -> tuple[HttpAnswer, object]:
        """`UpstreamClient.request`, awaited: the same retries, waits, breaker and final errors."""
        call = self._call(_AsyncCall, method, path, params, content, headers, idempotent, read, describe)
        try:
            return await tenacity.AsyncRetrying(**self._retry_policy(call, self._async_sleep))(call.attempt_async)
        except GAVE_UP as exc:
            raise call.gave_up(exc) from None


@dataclass
class AsyncUpstreamApiClient(UpstreamApiClient):
    """UpstreamApiClient for coroutines: the same fields (policy objects included), an
    AsyncUpstreamClient underneath, used with `async with`."""

    CLIENT: ClassVar[type[UpstreamClient]] = AsyncUpstreamClient

    @property
    def guard(self) -> UpstreamGuard:
        return self._http.guard

    def close(self) -> None:
        raise TypeError("close an async client with `await client.aclose()` or `async with`")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _aget(self, path: str, params: dict[str, str | int], read: Callable[[HttpAnswer], Any] | None = None) -> tuple[HttpAnswer, Any]:
        describe = f"GET {path}"
        answer, parsed = await self._http.arequest("GET", path, params=params, read=read, describe=describe)
        self._http.raise_for_final_status(answer, describe)
        return answer, parsed


class _Call:
    """One call of UpstreamClient.request: its attempts, which failures are worth another, and the
    error it ends with when the retry budget is spent."""

    def __init__(
        self,
        client: UpstreamClient,
        method: str,
        path: str,
        params: dict | None,
        content: bytes | None,
        headers: dict | None,
        *,
        idempotent: bool,
        read: Callable[[HttpAnswer], object] | None,
        describe: str,
    ):
        self.client = client
        self.method, self.path, self.params, self.content, self.headers = method, path, params, content, headers
        self.idempotent = idempotent
        self.read = read
        self.describe = describe
        self.unreadable: list[tuple[HttpAnswer, str]] = []  # answers whose body `read` could not read, and why

    def attempt(self) -> tuple[HttpAnswer, object]:
        """One request through the upstream's guard; the breaker hears how it went."""
        client, guard = self.client, self.client.guard
        guard.check_closed()
        client.stats.requests += 1
        try:
            with guard.slot():
                answer = client._send_once(self.method, self.path, self.params, self.content, self.headers)
        except httpx.TransportError as exc:
            guard.record(exc)
            raise
        except ResponseTooLarge:
            guard.record(None)
            raise
        return self.judge(answer)

    def judge(self, answer: HttpAnswer) -> tuple[HttpAnswer, object]:
        """A retryable status raises (the breaker hears of it), otherwise the answer is read."""
        guard = self.client.guard
        if answer.status_code in RETRYABLE_STATUS:
            # A 429 is a healthy upstream asking us to slow down: it does not count towards the breaker.
            failure = RetryableStatus(answer)
            guard.record(None if answer.status_code == 429 else failure)
            raise failure
        guard.record(None)
        if self.read is None or not 200 <= answer.status_code < 300:
            return answer, None
        try:
            return answer, self.read(answer)
        except InvalidBody as exc:
            self.unreadable.append((answer, exc.reason))
            raise

    def worth_retrying(self, exc: BaseException) -> bool:
        """Failures that can pass; without idempotency only those that certainly never landed."""
        if isinstance(exc, (RetryableStatus, InvalidBody)):
            return self.idempotent or (isinstance(exc, RetryableStatus) and exc.answer.status_code == 429)
        if isinstance(exc, httpx.TransportError):
            return self.idempotent or isinstance(exc, NOT_SENT)
        return False

    def count_retry(self, state: tenacity.RetryCallState) -> None:
        client = self.client
        client.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        client.stats.reasons[_kind(exc)] += 1
        log.warning(
            "%s %s: attempt %d failed (%s); retrying", client.system, self.describe, state.attempt_number, client.redact(_describe(exc))
        )

    def unreadable_too_often(self, _: tenacity.RetryCallState) -> bool:
        return len(self.unreadable) >= self.client.retry.max_unreadable_attempts

    def gave_up(self, exc: RetryableStatus | httpx.TransportError | InvalidBody) -> UpstreamError:
        """The error a spent budget ends with: an unreadable body wins over the failures around it."""
        client = self.client
        if self.unreadable:  # every answer that came was unreadable
            answer, reason = self.unreadable[-1]
            return BodyStillInvalid(
                client.system,
                f"{self.describe} answered an unreadable body {len(self.unreadable)} time(s), every time it answered: "
                f"{client.redact(reason)}",
                answer,
                client.redact(reason),
                len(self.unreadable),
            )
        if isinstance(exc, RetryableStatus):
            return UpstreamError(
                client.system,
                f"{self.describe} still failing after {client.retry.max_attempts} attempts: {exc}",
                exc.answer.status_code,
            )
        retried = self.worth_retrying(exc)
        tried = client.retry.max_attempts if retried else 1
        hint = "" if retried else " (not retried: the request may have reached the upstream and has no idempotency key)"
        return UpstreamError(client.system, f"{self.describe} still failing after {tried} attempt(s): {_describe(exc)}{hint}")


class _AsyncCall(_Call):
    client: AsyncUpstreamClient

    async def attempt_async(self) -> tuple[HttpAnswer, object]:
        """`_Call.attempt` on the async client: the same guard, breaker and reading."""
        client, guard = self.client, self.client.guard
        guard.check_closed()
        client.stats.requests += 1
        try:
            async with guard.aslot():
                answer = await client._send_once_async(self.method, self.path, self.params, self.content, self.headers)
        except httpx.TransportError as exc:
            guard.record(exc)
            raise
        except ResponseTooLarge:
            guard.record(None)
            raise
        return self.judge(answer)


def _retry_after_s(answer: HttpAnswer) -> float | None:
    value = answer.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


class _WaitHonouringRetryAfter(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.backoff = tenacity.wait_random_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RetryableStatus):
            hinted = _retry_after_s(exc.answer)
            if hinted is not None:
                return min(hinted, self.policy.max_retry_after_s)
        return self.backoff(retry_state)


def _kind(exc: BaseException | None) -> str:
    if isinstance(exc, RetryableStatus):
        return f"HTTP {exc.answer.status_code}"
    if isinstance(exc, InvalidBody):
        return "unreadable body"
    return type(exc).__name__ if exc else "unknown"


def _describe(exc: BaseException | None) -> str:
    # Only the exception's type (and our own messages): httpx messages can include full URLs.
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__
    if isinstance(exc, InvalidBody):
        return f"unreadable body: {exc.reason}"
    return str(exc) if exc else "unknown"
