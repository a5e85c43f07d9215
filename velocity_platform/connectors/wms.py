"""HTTP client for the WMS: the location master, current assignments, and directive pushes.

Every directive is posted with its deterministic directive_id as the `Idempotency-Key`, which
is what makes retrying a POST safe: a WMS that applied a move and lost the answer simply
acknowledges the same key again and applies nothing twice.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from velocity_platform.connectors.erp import cursor_of, read_page
from velocity_platform.connectors.http import (
    AsyncUpstreamApiClient,
    CircuitOpen,
    HttpAnswer,
    InvalidBody,
    UpstreamApiClient,
    UpstreamError,
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


@dataclass(kw_only=True)
class WmsClient(UpstreamApiClient):
    SYSTEM: ClassVar[str] = SYSTEM
    token_source: str = "VELOCITY_WMS_TOKEN"

    def _paged(self, path: str, reader: Callable[[bytes], Any] | None = None, warehouse_id: str | None = None) -> list:
        """Every record of a paged listing (dicts), or with `reader` what it made of each page.

        The reader runs inside the retry loop, so a page it cannot read is fetched again.
        """

        def read(answer: HttpAnswer) -> tuple[Any, str | None]:
            if reader is None:
                page = _page_or_invalid(answer)
                return page["records"], page.get("next_cursor")
            cursor = cursor_of(answer.content)
            return read_page(answer.content, reader), cursor

        parsed: list = []
        cursor: str | None = None
        for page_no in itertools.count(1):
            params: dict[str, str | int] = {"limit": self.page_size(page_no)}
            if warehouse_id:
                params["warehouse_id"] = warehouse_id
            if cursor:
                params["cursor"] = cursor
            _, (page, cursor) = self._get(path, params, read)
            if reader is None:
                parsed.extend(page)
            else:
                parsed.append(page)
            if not cursor:
                return parsed

    def locations(self, reader: Callable[[bytes], Any] | None = None, warehouse_id: str | None = None) -> list:
        """The location master (of one warehouse when named; a network WMS otherwise lists every site's)."""
        return self._paged("/v1/locations", reader, warehouse_id)

    def assignments(self, reader: Callable[[bytes], Any] | None = None, warehouse_id: str | None = None) -> list:
        return self._paged("/v1/slotting/assignments", reader, warehouse_id)

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

    def push_directives(self, directives: list[dict]) -> list[PushOutcome]:
        """POST many directives in one request, each under its own idempotency key.

        The WMS answers each item as the single POST would; the request carries a key of its
        own derived from the items' keys, so a retry after a lost answer is the same request.
        Raises UpstreamError when the batch got no usable answer: then no item is settled.
        """
        if not directives:
            return []
        request = _BatchRequest.of(directives)
        response, answer = self._http.request("POST", BATCH_PATH, **request.options())
        return request.outcomes(self, response, answer)

    def _outcome(self, key: str, result: dict) -> PushOutcome:
        status = result.get("http_status")
        if status in REJECTED_STATUS:
            detail = {k: v for k, v in result.items() if k not in ("idempotency_key", "http_status")}
            return PushOutcome(key, "rejected", status, None, self._http.redact(orjson.dumps(detail).decode()[:500]))
        if status not in (200, 201):
            raise UpstreamError(SYSTEM, f"directive {key}: unexpected status {status} in the batch answer")
        return PushOutcome(key, "replayed" if result.get("replayed") else "applied", status, result.get("ack_id"), result.get("status", ""))


def directive_body(directive: dict, **extra: Any) -> str:
    """A directive as the WMS takes it (the outbox row's payload, posted as is): the move, why,
    and its expected saving; `extra` fields after them (the exception service's origin...)."""
    return orjson.dumps(
        {
            "directive_id": directive["directive_id"],
            "business_date": directive["business_date"].isoformat(),
            # The site the move is for: a network WMS routes by it and refuses another site's location.
            **({"warehouse_id": directive["warehouse_id"]} if directive.get("warehouse_id") else {}),
            "sku_id": directive["sku_id"],
            "from_location": directive["from_location"],
            "to_location": directive["to_location"],
            "reason": directive["reason"],
            "expected_saving_m_per_day": round(float(directive["expected_saving_m_per_day"]), 3),
            **extra,
        }
    ).decode()


BATCH_PATH = "/v1/slotting/directives/batch"


@dataclass(frozen=True)
class _BatchRequest:
    """One POST of many directives: what the sync and the async client send, and how either
    reads the answer."""

    keys: list[str]
    batch_key: str
    body: bytes
    describe: str

    @classmethod
    def of(cls, directives: list[dict]) -> _BatchRequest:
        keys = [d["directive_id"] for d in directives]
        batch_key = "batch-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        body = orjson.dumps({"items": [{"idempotency_key": k, "directive": d} for k, d in zip(keys, directives, strict=True)]})
        return cls(keys, batch_key, body, f"POST {BATCH_PATH} [{len(keys)} directives, {keys[0]}..]")

    def options(self) -> dict:
        return {
            "content": self.body,
            "headers": {"Idempotency-Key": self.batch_key, "Content-Type": "application/json"},
            "idempotent": True,
            "read": _batch_or_invalid,
            "describe": self.describe,
        }

    def outcomes(self, client: WmsClient | AsyncWmsClient, response: HttpAnswer, answer: dict) -> list[PushOutcome]:
        client._http.raise_for_final_status(response, self.describe)
        by_key = {r.get("idempotency_key"): r for r in answer["results"] if isinstance(r, dict)}
        missing = [k for k in self.keys if k not in by_key]
        if missing:
            raise UpstreamError(SYSTEM, f"{self.describe}: the answer has no result for {len(missing)} directive(s), e.g. {missing[0]}")
        return [client._outcome(k, by_key[k]) for k in self.keys]


@dataclass(kw_only=True)
class AsyncWmsClient(AsyncUpstreamApiClient):
    """The WMS for the exception service: batch pushes, awaited."""

    SYSTEM: ClassVar[str] = SYSTEM
    token_source: str = "VELOCITY_WMS_TOKEN"

    _outcome = WmsClient._outcome

    async def push_directives(self, directives: list[dict]) -> list[PushOutcome]:
        """WmsClient.push_directives, awaited (same request, same answers, same errors)."""
        if not directives:
            return []
        request = _BatchRequest.of(directives)
        response, answer = await self._http.arequest("POST", BATCH_PATH, **request.options())
        return request.outcomes(self, response, answer)


def _batch_or_invalid(answer: HttpAnswer) -> dict:
    value = _json_or_invalid(answer)
    if not isinstance(value.get("results"), list):
        raise InvalidBody("no results list in the batch answer")
    return value


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


__all__ = ["AsyncWmsClient", "CircuitOpen", "PushOutcome", "UpstreamError", "WmsClient"]
