"""What the ERP and WMS clients share: an httpx client, the retry policy, and clear errors.

Retries (tenacity): exponential backoff with full jitter, bounded attempts, `Retry-After`
honoured, and only for failures that can pass (connection errors, timeouts, 429, 5xx). A 4xx
answer other than 429 is final and raised at once with the upstream's message. The bearer
token lives in the client's headers only: it is never part of a message, a log line or an error.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import tenacity

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


class UpstreamError(RuntimeError):
    """An upstream answered in a way that retrying will not fix, or kept failing past the budget."""

    def __init__(self, system: str, message: str, status: int | None = None):
        super().__init__(f"{system}: {message}")
        self.system = system
        self.status = status


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code} from {response.request.url.path}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_wait_s: float = 0.2
    max_wait_s: float = 10.0
    max_retry_after_s: float = 30.0


def make_client(base_url: str, token: str | None, timeout_s: float, verify: bool = True) -> httpx.Client:
    headers = {"Accept": "application/json", "User-Agent": "velocity-platform"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout_s),
        verify=verify,
        follow_redirects=False,  # a redirect could carry the bearer token to another host
    )


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, RetryableStatus))


class _WaitHonouringRetryAfter(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.backoff = tenacity.wait_random_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RetryableStatus):
            hinted = _retry_after_s(exc.response)
            if hinted is not None:
                return min(hinted, self.policy.max_retry_after_s)
        return self.backoff(retry_state)


@dataclass
class RetryStats:
    """How hard a client had to work; surfaced as asset metadata and in reliability reports."""

    requests: int = 0
    retries: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries}


def send_with_retries(
    system: str,
    send: Callable[[], httpx.Response],
    policy: RetryPolicy,
    stats: RetryStats,
    describe: str,
) -> httpx.Response:
    """Send until a final answer; return a 2xx/3xx/4xx response, raise UpstreamError otherwise."""

    def attempt() -> httpx.Response:
        stats.requests += 1
        response = send()
        if response.status_code in RETRYABLE_STATUS:
            response.read()
            raise RetryableStatus(response)
        return response

    def before_sleep(state: tenacity.RetryCallState) -> None:
        stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s %s: attempt %d failed (%s); retrying", system, describe, state.attempt_number, _describe(exc))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=_WaitHonouringRetryAfter(policy),
        retry=tenacity.retry_if_exception(_is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except RetryableStatus as exc:
        raise UpstreamError(
            system,
            f"{describe} still failing after {policy.max_attempts} attempts: {exc}",
            exc.response.status_code,
        ) from None
    except httpx.TransportError as exc:
        raise UpstreamError(
            system, f"{describe} still failing after {policy.max_attempts} attempts: {_describe(exc)}"
        ) from None


def _describe(exc: BaseException | None) -> str:
    # Only the exception's type and path: httpx messages can include full URLs and headers.
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__
    return str(exc) if exc else "unknown"


def raise_for_final_status(system: str, response: httpx.Response, describe: str) -> None:
    if response.status_code < 400:
        return
    detail = response.text[:300]
    hint = {
        401: " (check the bearer token in the environment)",
        403: " (the token lacks permission)",
    }.get(response.status_code, "")
    raise UpstreamError(system, f"{describe} answered HTTP {response.status_code}{hint}: {detail}", response.status_code)
