"""Intake: what the body of an authenticated delivery says, as the vendor's messages.

The request's media type must be one the vendor posts (JSON, form-urlencoded, or a GET
query string where a vendor uses it); the charset is honoured. Before parsing, bodies
are guarded against deep nesting and absurdly long numbers. The vendor sees the request
without the headers that carry credentials (every registered method's, and those the
source's own verifiers declare, such as a custom HMAC header), then parses the body by
its own rule: one message or a batch, each validated and checked alike.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Collection, Mapping
from urllib.parse import parse_qsl

from receiver.auth import Principal
from receiver.errors import InvalidPayloadError, UnsupportedMediaTypeError
from receiver.events import Delivery
from receiver.vendors.base import Inbound, Parsed, Vendor

MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 100
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1))


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type header: no parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


# Python codecs that are not character sets: transforms of text or bytes, and its own escapes.
_NOT_CHARSETS = frozenset({"undefined", "punycode", "idna", "unicode-escape", "raw-unicode-escape"})


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter (default utf-8), refused unless it is a text encoding Python knows.

    ``codecs.lookup`` also finds transforms (``rot13``, ``base64``, ``zlib``) and
    Python's own codecs (``undefined``, ``punycode``): none of them is a charset.
    """
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                info = codecs.lookup(charset)
            except LookupError:
                info = None
            if info is None or not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
                msg = f"charset {charset[:40]!r} is not a supported text encoding; send utf-8"
                raise UnsupportedMediaTypeError(msg)
            return charset
    return "utf-8"


def query_params(query_string: bytes) -> dict[str, str]:
    """The query string's parameters; a repeated name keeps its first value, as in forms and headers."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        params.setdefault(name, value)
    return params


def public_headers(headers: Mapping[bytes, bytes], credential_headers: Collection[str]) -> dict[str, str]:
    """The request headers without credentials, as text."""
    return {
        name: v.decode("latin-1") for k, v in headers.items() if (name := k.decode("latin-1")) not in credential_headers
    }


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


def inbound_of(
    vendor: Vendor, delivery: Delivery, credential_headers: Collection[str], principal: Principal | None = None
) -> Inbound:
    """The request as the vendor sees it, once its media type is one the vendor posts."""
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
        headers=public_headers(delivery.headers, credential_headers),
        proven=principal.proven if principal is not None else None,
    )


def read(
    vendor: Vendor,
    delivery: Delivery,
    credential_headers: Collection[str],
    principal: Principal | None = None,
    *,
    max_items: int = 1000,
) -> Parsed:
    """The delivery's messages, or the ``RequestError`` that says what to fix."""
    vendor.model_for(delivery.event)  # an unknown callback is a 404 before the body is judged
    inbound = inbound_of(vendor, delivery, credential_headers, principal)
    guard(delivery.body)
    return vendor.parse(delivery.event, inbound, max_items)
