"""Payload validation: the body must be what the vendor's model for this callback says.

The request's media type must be one the vendor posts (JSON, form-urlencoded, or a GET
query string where a vendor uses it); the charset is honoured. Before parsing, bodies
are guarded against deep nesting and absurdly long numbers. JSON bodies are parsed and
validated in one pass (``model_validate_json``), the fast path; other forms are decoded
by the vendor module first.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from receiver.errors import InvalidPayloadError, UnknownEventError, UnsupportedMediaTypeError
from receiver.events import Delivery
from receiver.vendors import Vendor
from receiver.vendors.base import Inbound

MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 100
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1))
# Never handed to vendor code, kept in dead letters, or logged.
CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "x-soracom-signature", "x-soracom-token",
    "webhook-signature", "x-hub-signature", "x-hub-signature-256", "x-api-key",
})  # fmt: skip


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type header: no parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter (default utf-8), refused when Python does not know it."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                codecs.lookup(charset)
            except LookupError as exc:
                msg = f"charset {charset[:40]!r} is not supported; send utf-8"
                raise UnsupportedMediaTypeError(msg) from exc
            return charset
    return "utf-8"


def public_headers(headers: Mapping[bytes, bytes]) -> dict[str, str]:
    """The request headers without credentials, as text."""
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in headers.items()
        if k.decode("latin-1") not in CREDENTIAL_HEADERS
    }


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{"loc", "type", "msg"}``, never echoing the input values."""
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def guard(body: bytes) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and numbers longer than ``MAX_NUMBER_DIGITS`` digits."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        msg = f"the body nests deeper than {MAX_DEPTH} levels"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "too_deep", "msg": msg}])
    if _LONG_NUMBER.search(body):
        msg = f"the body holds a number longer than {MAX_NUMBER_DIGITS} digits"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "number_too_long", "msg": msg}])


def _depth(body: bytes) -> int:
    """Bracket depth outside strings (only run when the body has many brackets)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def model_for(vendor: Vendor, event: str) -> type[BaseModel]:
    model = vendor.events.get(event)
    if model is None:
        known = ", ".join(sorted(vendor.events))
        msg = f"{vendor.kind} has no callback named {event!r}; known callbacks: {known}"
        raise UnknownEventError(msg)
    return model


def inbound_of(vendor: Vendor, delivery: Delivery) -> Inbound:
    """The request as the vendor module sees it, once its media type is one the vendor posts."""
    kind = media_type(delivery.content_type)
    if kind not in vendor.media_types:
        accepted = ", ".join(sorted(t or "a GET query string" for t in vendor.media_types))
        msg = f"Content-Type {kind!r} is not accepted here; send {accepted}"
        raise UnsupportedMediaTypeError(msg)
    return Inbound(
        body=delivery.body,
        media_type=kind,
        charset=charset_of(delivery.content_type),
        query=delivery.query,
        headers=public_headers(delivery.headers),
    )


def validate(vendor: Vendor, delivery: Delivery) -> BaseModel:
    """Return the validated payload, or raise the ``RequestError`` that says what to fix."""
    model = model_for(vendor, delivery.event)
    inbound = inbound_of(vendor, delivery)
    guard(delivery.body)
    try:
        decoded = vendor.decode(delivery.event, inbound)
        if decoded is not None:
            payload = model.model_validate(decoded)
        else:
            body = delivery.body
            if inbound.charset not in ("utf-8", "utf8"):
                body = body.decode(inbound.charset).encode()
            payload = model.model_validate_json(body)
    except UnicodeDecodeError as exc:
        msg = f"the body is not valid {inbound.charset}"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "encoding", "msg": msg}]) from exc
    except ValidationError as exc:
        errors = field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            msg = "the body is not valid JSON"
        else:
            msg = f"the body does not match the {delivery.event} schema: " + ", ".join(e["loc"] for e in errors)
        raise InvalidPayloadError(msg, errors) from exc
    errors = vendor.check(payload)
    if errors:
        msg = f"the body does not match the {delivery.event} schema: " + ", ".join(e["loc"] for e in errors)
        raise InvalidPayloadError(msg, errors)
    return payload


def validate_all(vendor: Vendor, delivery: Delivery) -> list[BaseModel]:
    """One payload, or every item of a JSON array body (all valid, or 422 naming each bad item)."""
    if media_type(delivery.content_type) != "application/json" or delivery.body.lstrip()[:1] != b"[":
        return [validate(vendor, delivery)]
    model = model_for(vendor, delivery.event)
    inbound_of(vendor, delivery)
    guard(delivery.body)
    try:
        items = from_json(delivery.body)
    except ValueError as exc:
        raise InvalidPayloadError(
            "the body is not valid JSON", [{"loc": "(body)", "type": "json_invalid", "msg": str(exc)}]
        ) from exc
    if not isinstance(items, list) or not items:
        raise InvalidPayloadError(
            "a batch must be a non-empty JSON array", [{"loc": "(body)", "type": "empty", "msg": "empty"}]
        )
    payloads: list[BaseModel] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            payloads.append(model.model_validate(item))
        except ValidationError as exc:
            errors.extend({"index": index, **error} for error in field_errors(exc))
    if errors:
        bad = sorted({e["index"] for e in errors})
        indexes = ", ".join(map(str, bad))
        msg = f"{len(bad)} of {len(items)} batch items are invalid (indexes {indexes}); none was published"
        raise InvalidPayloadError(msg, errors)
    return payloads
