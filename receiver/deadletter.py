"""Dead letters: an authenticated delivery that was refused is kept, so it can be re-driven.

The record carries the raw body (base64 when it is not UTF-8), its content type, the
request headers without the source's credential headers, the query string, the source,
the callback name, who was proven to send it (method, name, roles, groups: never a
secret) and why it was refused. ``letter_delivery`` and ``letter_principal`` turn a
record back into a delivery for ``receiver deadletter replay``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from receiver.auth import Principal
from receiver.errors import InvalidPayloadError, RequestError
from receiver.events import MAX_RECORD_BYTES, Delivery, Outcome, Record
from receiver.intake import public_headers
from receiver.normalize import event_id, rfc3339


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


def deadletter_record(
    delivery: Delivery,
    error: RequestError,
    prefix: str,
    credential_headers: Collection[str],
    principal: Principal | None = None,
) -> Record:
    try:
        body, encoding = delivery.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(delivery.body).decode(), "base64"
    letter: dict[str, Any] = {
        "id": event_id(delivery),
        "source_id": delivery.source_id,
        "event": delivery.event,
        "received_at": rfc3339(delivery.received_at),
        "code": error.code,
        "message": error.message,
        "errors": error.errors if isinstance(error, InvalidPayloadError) else [],
        "content_type": delivery.content_type,
        "headers": public_headers(delivery.headers, credential_headers),
        "query": dict(delivery.query),
        "principal": None if principal is None else _principal_facts(principal),
        "body_encoding": encoding,
        "body": body,
    }
    record = Record(
        topic=deadletter_topic(prefix),
        key=delivery.source_id.encode(),
        value=json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode(),
        headers=[("content-type", b"application/json"), ("error_code", error.code.encode())],
    )
    if (over := record.size() - MAX_RECORD_BYTES) > 0:  # kept truncated, and marked so, rather than lost to a 503
        keep = max(0, len(body) - over - 4096)
        errors = error.errors if isinstance(error, InvalidPayloadError) else []
        letter |= {"body": body[: keep - keep % 4], "body_truncated": len(delivery.body), "errors": errors[:100]}
        record.value = json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode()
    return record


def _principal_facts(principal: Principal) -> dict[str, Any]:
    return {
        "method": principal.method,
        "name": principal.name,
        "key_id": principal.key_id,
        "roles": sorted(principal.roles),
        "groups": None if principal.groups is None else sorted(principal.groups),
        "proven": None if principal.proven is None else dict(principal.proven),
    }


def letter_delivery(letter: dict[str, Any]) -> Delivery:
    """The delivery a dead letter kept, as it arrived (credentials were never kept)."""
    raw = letter["body"]
    body = base64.b64decode(raw) if letter.get("body_encoding") == "base64" else raw.encode()
    received = datetime.fromisoformat(letter["received_at"]).timestamp()
    headers = {k.encode("latin-1"): v.encode("latin-1") for k, v in letter.get("headers", {}).items()}
    return Delivery(
        source_id=letter["source_id"],
        event=letter["event"],
        body=body,
        content_type=letter.get("content_type", ""),
        headers=headers,
        client_ip="",
        received_at=received,
        outcome=Outcome(request_id=f"redrive-{letter['id']}"),
        query=letter.get("query", {}),
    )


def letter_principal(letter: dict[str, Any]) -> Principal | None:
    """Who was proven to send the letter, for the authorization it must pass again; ``None``: unknown."""
    facts = letter.get("principal")
    if not isinstance(facts, dict):
        return None
    groups = facts.get("groups")
    proven = facts.get("proven")
    return Principal(
        method=str(facts.get("method", "")),
        name=str(facts.get("name", "")),
        key_id=facts.get("key_id"),
        roles=frozenset(facts.get("roles") or ()),
        groups=None if groups is None else frozenset(groups),
        proven=None if proven is None else {str(k): str(v) for k, v in proven.items()},
    )
