"""What a vendor is, the defaults of a JSON vendor, and the one vocabulary device facts go into.

A vendor is one module under ``receiver/vendors/`` holding its options model (the keys
a source of its ``kind`` may set beside the common ones), its payload models and one
class derived from ``JsonVendor``. The class declares its ``kind``, ``type_prefix``,
``media_types`` and ``events`` (callback name -> pydantic model) and overrides what it
does differently:

* ``identity``: what, beside the body, tells one delivery from another (signed identity
  headers, token claims, a GET's query string); it goes into the event id;
* ``decode``: its batch rule. A body (JSON object or array, form, query string) becomes
  the list of message objects to validate, each then checked exactly like a single
  message. JSON is read strictly (``read_json``): ``NaN``, ``Infinity`` and duplicate
  keys are refused. Identity a credential proved (``Principal.proven``) is mapped here,
  by the vendor.
* ``check``: field errors beyond the model's;
* ``data``, ``subject``, ``time``, ``group``: what the envelope needs;
* ``reading``: the device facts in the one vocabulary;
* ``answer``: a synchronous answer the vendor expects (a Sigfox downlink), or ``None``;
* ``credential_subject``: the subject a credential must name by default (a domain).

``vendors/__init__.py`` lists the vendors; nothing outside ``receiver/vendors/`` names one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from receiver.errors import BatchTooLargeError, InvalidPayloadError, UnknownEventError

FieldErrors = list[dict[str, Any]]
DEFAULT_MAX_BATCH_ITEMS = 1000  # a 1,000-item batch costs ~50-100 ms of the loop (see the README's batch rule)


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Inbound:
    """The request as a vendor may see it: no credentials, body not yet parsed."""

    body: bytes
    media_type: str  # lower case, without parameters
    charset: str = "utf-8"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names; credentials removed
    proven: Mapping[str, str] | None = None  # identity the credential proved (``Principal.proven``)


class Decoded(NamedTuple):
    """The message objects of one body, and whether the body was a batch (ids get an index)."""

    items: Sequence[Any]
    batch: bool


class Parsed(NamedTuple):
    """Validated messages; ``batch`` when the body was a batch, even of one; the delivery's identity."""

    messages: Sequence[BaseModel]
    batch: bool
    identity: str = ""  # what tells this delivery from another beside its body (see ``JsonVendor.identity``)


class Position(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0)


class Reading(BaseModel):
    """Device facts with the same names and units whichever vendor sent them."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    time: datetime | None = Field(default=None, description="when the device sent it, UTC")
    position: Position | None = None
    temperature_c: float | None = None
    battery_pct: float | None = Field(default=None, ge=0, le=100)
    rssi_dbm: float | None = None
    snr_db: float | None = None
    sequence: int | None = Field(default=None, description="the vendor's message counter, for gap tracking")
    group: str | None = None


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Answer:
    """A synchronous answer the vendor expects: status and JSON body (None: empty)."""

    status: int
    body: Any = None


class VendorOptions(BaseModel):
    """The keys a vendor adds to its sources' settings; none by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Vendor(Protocol):
    """One source's vendor, bound to the source's options: what the pipeline asks of it."""

    @property
    def kind(self) -> str: ...

    @property
    def type_prefix(self) -> str:
        """CloudEvents ``type`` = prefix + event name."""
        ...

    @property
    def media_types(self) -> frozenset[str]:
        """The media types it posts; "" stands for a GET query string."""
        ...

    @property
    def events(self) -> Mapping[str, type[BaseModel]]: ...

    @property
    def credential_subject(self) -> str | None: ...

    @property
    def subject_is_proven_device(self) -> bool:
        """Does an event's subject name a device in the namespace a credential proves (a SIM's IMSI)?"""
        ...

    def model_for(self, event: str) -> type[BaseModel]: ...

    def parse(self, event: str, inbound: Inbound) -> Parsed: ...

    def identity(self, event: str, inbound: Inbound) -> str: ...

    def data(self, payload: Any) -> Any: ...

    def subject(self, payload: Any) -> str: ...

    def time(self, payload: Any) -> float | None: ...

    def group(self, payload: Any) -> str | None: ...

    def reading(self, payload: Any) -> Reading | None: ...

    def answer(self, event: str, payload: Any) -> Answer | None: ...


class JsonVendor:
    """The defaults: JSON bodies, an array is a batch of messages, no device facts, no answer."""

    kind: ClassVar[str]
    type_prefix: ClassVar[str]
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json"})
    subject_is_proven_device: ClassVar[bool] = False  # True: a device-proving credential binds the subject
    events: ClassVar[Mapping[str, type[BaseModel]]]
    Options: ClassVar[type[VendorOptions]] = VendorOptions

    def __init__(self, options: Any) -> None:
        self.options: VendorOptions = options
        # The source's batch rule (``sources.<id>.max_batch_items``); a bare options model: the default.
        self.max_batch_items: int = getattr(options, "max_batch_items", DEFAULT_MAX_BATCH_ITEMS)

    @classmethod
    def from_options(cls, options: Any) -> Self:
        """The vendor bound to one source's options; raise ``ValueError`` for a config problem."""
        return cls(options)

    @property
    def credential_subject(self) -> str | None:
        return None

    def model_for(self, event: str) -> type[BaseModel]:
        model = self.events.get(event)
        if model is None:
            known = ", ".join(sorted(self.events))
            msg = f"{self.kind} has no callback named {event!r}; known callbacks: {known}"
            raise UnknownEventError(msg)
        return model

    def parse(self, event: str, inbound: Inbound) -> Parsed:
        """Every message of the body validated and checked, or one 422 naming each bad field."""
        model = self.model_for(event)
        decoded = self.decode(event, inbound)
        if decoded.batch and not decoded.items:
            msg = "a batch must be a non-empty JSON array"
            raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "empty", "msg": msg}])
        messages: list[BaseModel] = []
        errors: FieldErrors = []
        for index, item in enumerate(decoded.items):
            try:
                message = model.model_validate(item)
            except ValidationError as exc:
                found = field_errors(exc)
            else:
                found = self.check(message)
                messages.append(message)
            errors.extend({"index": index, **e} if decoded.batch else e for e in found)
        if errors:
            raise _refusal(event, errors, len(decoded.items) if decoded.batch else None)
        return Parsed(messages, decoded.batch, self.identity(event, inbound))

    def decode(self, event: str, inbound: Inbound) -> Decoded:
        """A JSON array is a batch, each item one message; anything else is one message."""
        del event
        document = read_json(inbound, max_items=self.max_batch_items)
        if isinstance(document, list):
            return Decoded(document, batch=True)
        return Decoded([document], batch=False)

    def identity(self, event: str, inbound: Inbound) -> str:
        """What, beside the body, tells one delivery from another: it goes into the event id.

        Only what was proven or what the request itself is (a GET's query string) belongs
        here, and nothing that changes when the vendor retries the same delivery. The
        default, for vendors whose body names the device: nothing.
        """
        del event, inbound
        return ""

    def check(self, payload: Any) -> FieldErrors:
        del payload
        return []

    def data(self, payload: Any) -> Any:
        """The event's ``data``: the payload with the vendor's own field names, unknown ones kept."""
        dumped: Any = payload.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return dumped

    def subject(self, payload: Any) -> str:
        del payload
        return ""

    def time(self, payload: Any) -> float | None:
        """Unix seconds; ``None``: the receive time stands in."""
        del payload
        return None

    def group(self, payload: Any) -> str | None:
        del payload
        return None

    def reading(self, payload: Any) -> Reading | None:
        del payload
        return None

    def answer(self, event: str, payload: Any) -> Answer | None:
        del event, payload
        return None


def field_errors(exc: ValidationError) -> FieldErrors:
    """Pydantic's errors as ``{"loc", "type", "msg"}``, never echoing the input values."""
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def read_json(inbound: Inbound, max_items: int | None = None) -> Any:
    """The body as Python objects, strictly: what JSON does not hold, or holds ambiguously, is refused.

    ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``) are not numbers
    here; a lone surrogate escape (``"\\ud800"``) is no text UTF-8 can carry. A duplicate
    key would let what a signature covered and what is published differ in meaning (the
    last value wins in most parsers), so it is refused like a syntax error. With
    ``max_items``, a top-level array is read item by item and refused at its
    ``max_items + 1``-th: a large batch costs no more than the limit before it is refused.
    """
    text = _text(inbound)
    try:
        document = _DECODER.decode(text) if max_items is None else _decode_batch(text, max_items)
    except _DuplicateKeyError as exc:
        msg = f"the body repeats the key {exc.key[:40]!r} in one object; send each key once"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "duplicate_key", "msg": msg}]) from exc
    except _ConstantError as exc:
        msg = f"the body is not valid JSON: {exc} (NaN, Infinity and 1e999 are not numbers here)"
        error = {"loc": "(body)", "type": "json_invalid", "msg": "the body is not valid JSON"}
        raise InvalidPayloadError(msg, [error]) from exc
    except ValueError as exc:
        msg = "the body is not valid JSON"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "json_invalid", "msg": msg}]) from exc
    except RecursionError as exc:  # guarded by the nesting limit before parsing; never a 5xx if not
        msg = "the body nests too deeply"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "too_deep", "msg": msg}]) from exc
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(document):
        msg = "the body holds a lone surrogate escape (\\ud800-\\udfff unpaired), which is no UTF-8 text"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "lone_surrogate", "msg": msg}])
    return document


def _text(inbound: Inbound) -> str:
    try:
        return inbound.body.decode(inbound.charset)
    except UnicodeError as exc:  # UnicodeDecodeError, and what codecs such as punycode raise
        msg = f"the body is not valid {inbound.charset}"
        raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "encoding", "msg": msg}]) from exc


_WHITESPACE = " \t\n\r"


def _decode_batch(text: str, max_items: int) -> Any:
    """``_DECODER.decode``, but a top-level array is scanned one item at a time, up to ``max_items``."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if not text.startswith("[", start):
        return _DECODER.decode(text)
    scan = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__ (json.scanner), untyped
    items: list[Any] = []
    end = _skip(text, start + 1)
    if text.startswith("]", end):
        end += 1
    else:
        while True:
            try:
                item, end = scan(text, end)
            except StopIteration as stop:
                msg = "Expecting value"
                raise json.JSONDecodeError(msg, text, stop.value) from None
            items.append(item)
            if len(items) > max_items:
                msg = (
                    f"the batch has more than {max_items} items, this source's max_batch_items; "
                    f"send at most {max_items} items per request"
                )
                raise BatchTooLargeError(msg)
            end = _skip(text, end)
            if text.startswith("]", end):
                end += 1
                break
            if not text.startswith(",", end):
                msg = "Expecting ',' delimiter"
                raise json.JSONDecodeError(msg, text, end)
            end = _skip(text, end + 1)
    if _skip(text, end) != len(text):
        msg = "Extra data"
        raise json.JSONDecodeError(msg, text, end)
    return items


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


# An escape of a UTF-16 surrogate half; only bodies holding one are walked for an unpaired one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(document: Any) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _ConstantError(ValueError):
    pass


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise _ConstantError(msg)


def _finite_float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        msg = f"{literal[:40]} is too large for a number here"
        raise _ConstantError(msg)
    return number


# One decoder for every request (json.loads with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys)


def _refusal(event: str, errors: FieldErrors, batch_size: int | None) -> InvalidPayloadError:
    if any(e["type"] == "json_invalid" for e in errors):
        return InvalidPayloadError("the body is not valid JSON", errors)
    if batch_size is not None:
        bad = sorted({e["index"] for e in errors})
        indexes = ", ".join(map(str, bad))
        msg = f"{len(bad)} of {batch_size} batch items are invalid (indexes {indexes}); none was published"
        return InvalidPayloadError(msg, errors)
    msg = f"the body does not match the {event} schema: " + ", ".join(e["loc"] for e in errors)
    return InvalidPayloadError(msg, errors)
