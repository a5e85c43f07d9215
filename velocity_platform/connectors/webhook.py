"""Posting alerts as JSON to a webhook (a chat channel, an incident tool, a pager bridge).

The URL is a secret (chat webhooks carry their token in the path): it is held by the client
only, and no message, log line or error includes it. Transient failures (connection errors,
timeouts, 429, 5xx) are retried with jittered backoff through tenacity; anything else is final.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import orjson
import tenacity

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class WebhookError(RuntimeError):
    """The webhook did not take the message (its answer, never its URL, is in the message)."""


class _Retryable(Exception):
    pass


@dataclass
class AlertWebhook:
    url: str
    timeout_s: float = 10.0
    max_attempts: int = 4
    initial_wait_s: float = 0.2
    max_wait_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("the alert webhook URL must start with http:// or https://")
        # follow_redirects off: a redirect could carry the URL's token to another host.
        self._http = httpx.Client(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AlertWebhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, message: dict) -> None:
        """Deliver one message; raise WebhookError when it cannot be delivered."""
        body = orjson.dumps(message)

        def attempt() -> None:
            try:
                response = self._http.post(self.url, content=body, headers={"Content-Type": "application/json"})
            except httpx.TransportError as exc:
                raise _Retryable(type(exc).__name__) from None
            if response.status_code in _RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 300:
                raise WebhookError(f"the alert webhook refused the message: HTTP {response.status_code} {response.text[:200]}")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: log.warning("alert webhook: attempt %d failed; retrying", state.attempt_number),
            reraise=True,
        )
        try:
            retrying(attempt)
        except _Retryable as exc:
            raise WebhookError(f"the alert webhook is unavailable after {self.max_attempts} attempts ({exc})") from None
