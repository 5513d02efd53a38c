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


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type header: no parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


_PROBE = '{"a": [1]}'
# Python codecs that carry text yet are no character set a sender labels a body with.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape"})


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter (default utf-8), refused unless it is a text encoding Python knows."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                # CodecInfo marks the bytes <-> str codecs so (rot13, base64, zlib are not); the
                # round trip refuses what cannot even carry ASCII JSON ("undefined").
                info = codecs.lookup(charset)
                is_text = info._is_text_encoding and info.name not in _NOT_CHARSETS  # noqa: SLF001
                is_text = is_text and _PROBE.encode(charset).decode(charset) == _PROBE
            except (LookupError, UnicodeError) as exc:
                msg = f"charset {charset[:40]!r} is not supported; send utf-8"
                raise UnsupportedMediaTypeError(msg) from exc
            if not is_text:
                msg = f"charset {charset[:40]!r} is not a text encoding; send utf-8"
                raise UnsupportedMediaTypeError(msg)
            return charset
    return "utf-8"


def query_fields(query_string: bytes) -> dict[str, str]:
    """A query string's fields. One rule with forms (``vendors.sigfox``): a repeated name keeps its first value."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1")):
        fields.setdefault(name, value)
    return fields


def public_headers(headers: Mapping[bytes, bytes], credential_headers: Collection[str]) -> dict[str, str]:
    """The request headers without credentials, as text."""
    return {
        name: v.decode("latin-1") for k, v in headers.items() if (name := k.decode("latin-1")) not in credential_headers
    }


def guard(body: bytes) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and numbers longer than ``MAX_NUMBER_DIGITS`` digits.

    Both run in C over the bytes (a translate, a substring search, a few replaces), so a
    1 MiB body of any shape is judged in milliseconds, not a Python loop per byte.
    """
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        msg = f"the body nests deeper than {MAX_DEPTH} levels"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "too_deep", "msg": msg}])
    if _LONG_RUN in body.translate(_DIGITS_AS_ZERO):
        msg = f"the body holds a number longer than {MAX_NUMBER_DIGITS} digits"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "number_too_long", "msg": msg}])


def _depth(body: bytes) -> int:
    """Bracket depth outside strings, capped at ``MAX_DEPTH + 1`` (only run when the body has many brackets).

    Strings are cut out, then everything but the brackets, openers and closers made one
    kind each; every pass then removes the innermost pairs, so the number of passes
    until nothing is left is the depth.
    """
    brackets = _STRING.sub(b"", body).translate(_BRACKETS_ONLY, _NOT_BRACKETS)
    for depth in range(MAX_DEPTH + 1):
        if not brackets:
            return depth
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # unbalanced: not JSON, and no deeper than this
            return depth
        brackets = shorter
    return MAX_DEPTH + 1 if brackets else MAX_DEPTH


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DIGITS_AS_ZERO = bytes.maketrans(bytes(range(256)), bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256)))
_LONG_RUN = b"0" * (MAX_NUMBER_DIGITS + 1)


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
    vendor: Vendor, delivery: Delivery, credential_headers: Collection[str], principal: Principal | None = None
) -> Parsed:
    """The delivery's messages, or the ``RequestError`` that says what to fix."""
    vendor.model_for(delivery.event)  # an unknown callback is a 404 before the body is judged
    inbound = inbound_of(vendor, delivery, credential_headers, principal)
    guard(delivery.body)
    return vendor.parse(delivery.event, inbound)
