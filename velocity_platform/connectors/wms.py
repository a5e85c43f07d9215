"""HTTP client for the WMS: the location master, current assignments, and directive pushes.

Every directive is posted with its deterministic directive_id as the `Idempotency-Key`, which
is what makes retrying a POST safe: a WMS that applied a move and lost the answer simply
acknowledges the same key again and applies nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from velocity_platform.connectors.http import (
    RetryPolicy,
    RetryStats,
    UpstreamError,
    make_client,
    raise_for_final_status,
    send_with_retries,
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
    verify_tls: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stats: RetryStats = field(default_factory=RetryStats)

    def __post_init__(self) -> None:
        self._http = make_client(self.base_url, self.token, self.timeout_s, self.verify_tls)

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
            response = send_with_retries(
                SYSTEM, lambda p=params: self._http.get(path, params=p), self.retry, self.stats, describe
            )
            raise_for_final_status(SYSTEM, response, describe)
            page = orjson.loads(response.content)
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
        response = send_with_retries(
            SYSTEM,
            lambda: self._http.post(
                "/v1/slotting/directives",
                content=body,
                headers={"Idempotency-Key": key, "Content-Type": "application/json"},
            ),
            self.retry,
            self.stats,
            describe,
        )
        if response.status_code in REJECTED_STATUS:
            return PushOutcome(key, "rejected", response.status_code, None, response.text[:500])
        raise_for_final_status(SYSTEM, response, describe)
        answer = orjson.loads(response.content)
        status = "replayed" if answer.get("replayed") else "applied"
        return PushOutcome(key, status, response.status_code, answer.get("ack_id"), answer.get("status", ""))


__all__ = ["WmsClient", "PushOutcome", "UpstreamError"]
