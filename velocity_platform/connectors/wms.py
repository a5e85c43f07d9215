"""HTTP client for the WMS: the location master, current assignments, and directive pushes.

Every directive is posted with its deterministic directive_id as the `Idempotency-Key`, which
is what makes retrying a POST safe: a WMS that applied a move and lost the answer simply
acknowledges the same key again and applies nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from velocity_platform.connectors.http import (
    CircuitOpen,
    HttpAnswer,
    InvalidBody,
    RetryPolicy,
    RetryStats,
    UpstreamClient,
    UpstreamError,
    UpstreamLimits,
)

SYSTEM = "WMS"
# Answers that mean "the WMS will never apply this directive as sent": final, not retried.
REJECTED_STATUS = frozenset({409, 422})


@dataclass(frozen=True)
class PushOutcome:
    directive_id: str
    status: str  # applied | replayed | rejected
    http_status: int
    ack_id: str | None
    detail: str


@dataclass
class WmsClient:
    base_url: str
    token: str | None
    timeout_s: float = 30.0
    page_limit: int = 5000
    max_response_bytes: int = 64 * 1024 * 1024
    verify_tls: bool = True
    allow_plain_http: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: UpstreamLimits = field(default_factory=UpstreamLimits)
    token_source: str = "VELOCITY_WMS_TOKEN"
    stats: RetryStats = field(default_factory=RetryStats)

    def __post_init__(self) -> None:
        self._http = UpstreamClient(
            SYSTEM,
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

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _paged(self, path: str) -> list[dict]:
        records: list[dict] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": self.page_limit}
            if cursor:
                params["cursor"] = cursor
            describe = f"GET {path}"
            answer, page = self._http.request("GET", path, params=params, read=_page_or_invalid, describe=describe)
            self._http.raise_for_final_status(answer, describe)
            records.extend(page["records"])
            cursor = page.get("next_cursor")
            if not cursor:
                return records

    def locations(self) -> list[dict]:
        return self._paged("/v1/locations")

    def assignments(self) -> list[dict]:
        return self._paged("/v1/slotting/assignments")

    def push_directive(self, directive: dict) -> PushOutcome:
        """POST one directive under its idempotency key; retried only because it has one."""
        key = directive["directive_id"]
        body = orjson.dumps(directive)
        describe = f"POST /v1/slotting/directives [{key}]"
        # A connection lost after the WMS committed (the answer never arrives) is retried with
        # the same key: the WMS then answers the stored acknowledgement again, applied once.
        response, answer = self._http.request(
            "POST",
            "/v1/slotting/directives",
            content=body,
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
            idempotent=True,
            read=_json_or_invalid,
            describe=describe,
        )
        if response.status_code in REJECTED_STATUS:
            return PushOutcome(key, "rejected", response.status_code, None, self._http.redact(response.text[:500]))
        self._http.raise_for_final_status(response, describe)
        status = "replayed" if answer.get("replayed") else "applied"
        return PushOutcome(key, status, response.status_code, answer.get("ack_id"), answer.get("status", ""))


def _json_or_invalid(answer: HttpAnswer) -> dict:
    try:
        value = orjson.loads(answer.content)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidBody("not a JSON object")
    return value


def _page_or_invalid(answer: HttpAnswer) -> dict:
    page = _json_or_invalid(answer)
    if not isinstance(page.get("records"), list):
        raise InvalidBody("no records list in the page")
    return page


__all__ = ["CircuitOpen", "PushOutcome", "UpstreamError", "WmsClient"]
