"""Payload validation: the body must be what the vendor's model for this callback says.

Pydantic parses and validates the raw bytes in one pass (``model_validate_json``),
so malformed JSON and wrong fields come back as one list of field errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from receiver.errors import InvalidPayloadError, UnknownEventError, UnsupportedMediaTypeError
from receiver.events import Delivery
from receiver.vendors import Vendor


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type header: no parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{"loc", "type", "msg"}``, never echoing the input values."""
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def validate(vendor: Vendor, delivery: Delivery) -> BaseModel:
    """Return the validated payload, or raise the ``RequestError`` that says what to fix."""
    model = vendor.events.get(delivery.event)
    if model is None:
        known = ", ".join(sorted(vendor.events))
        msg = f"{vendor.kind} has no callback named {delivery.event!r}; known callbacks: {known}"
        raise UnknownEventError(msg)
    if media_type(delivery.content_type) not in vendor.media_types:
        accepted = ", ".join(sorted(vendor.media_types))
        msg = f"Content-Type {media_type(delivery.content_type)!r} is not accepted here; send {accepted}"
        raise UnsupportedMediaTypeError(msg)
    try:
        return model.model_validate_json(delivery.body)
    except ValidationError as exc:
        errors = field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            msg = "the body is not valid JSON"
        else:
            msg = f"the body does not match the {delivery.event} schema: " + ", ".join(e["loc"] for e in errors)
        raise InvalidPayloadError(msg, errors) from exc
