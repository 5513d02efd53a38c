"""Any other vendor: a JSON object checked against a JSON Schema file named in the config.

Pydantic cannot validate an arbitrary JSON Schema, so ``EVENTS`` only asks for a JSON
object (unknown fields kept) and ``SchemaValidator`` applies the source's schema
(draft 2020-12, via ``jsonschema``), built once at startup. Its field errors have the
shape of the other vendors' (``loc``, ``type``, ``msg``) and never repeat a value from
the body, only the schema's own constraint. ``format`` is an annotation, as the draft
says by default. A ``$ref`` must point inside the schema (``#/$defs/...``) and is
checked at load: nothing is ever fetched, and no request can fail on a missing one.

Where the device id, the time and the group sit in the body differs by vendor, so
``GenericSettings`` names them with JSON Pointers (RFC 6901). The time is Unix seconds
or an RFC 3339 string with an offset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as SchemaValidationError
from pydantic import BaseModel, ConfigDict, field_validator
from referencing import Registry
from referencing.exceptions import Unresolvable

from receiver.vendors.base import FieldErrors, JsonVendor, Reading, VendorOptions

_MISSING = object()
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")  # an array index: no leading zeros (RFC 6901)
_MAX_CONSTRAINT = 80  # characters of a schema constraint quoted in a message


class GenericMessage(BaseModel):
    """Any JSON object; what it must hold is the source's JSON Schema's business."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class SchemaValidator:
    """One source's JSON Schema, checked when loaded so a bad schema fails at startup."""

    def __init__(self, schema: Mapping[str, Any] | bool, *, name: str = "the schema") -> None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            msg = f"{name} is not a valid draft 2020-12 JSON Schema: {exc.message} (at {where}); fix the schema"
            raise ValueError(msg) from exc
        _check_refs(schema, schema, name)
        # An empty registry that retrieves nothing: a reference that escaped the checks above
        # fails as a schema error, never as a fetch.
        self._validator = Draft202012Validator(schema, registry=Registry())

    @classmethod
    def from_file(cls, path: str | Path) -> SchemaValidator:
        """Read and check the schema file a source names."""
        try:
            schema = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            msg = f"cannot read the JSON Schema file {str(path)!r}: {exc.strerror}"
            raise ValueError(msg) from exc
        except ValueError as exc:
            msg = f"the JSON Schema file {str(path)!r} is not valid JSON: {exc}"
            raise ValueError(msg) from exc
        return cls(schema, name=f"the JSON Schema file {str(path)!r}")

    def validate(self, obj: Any) -> list[dict[str, str]]:
        """The body's field errors, by path, each at most once; empty when it conforms."""
        errors: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()
        try:
            found = sorted(self._validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        except Unresolvable:  # an anchor the load-time checks could not see: the schema's fault
            msg = "the source's JSON Schema has a reference that names nothing; fix the schema"
            return [{"loc": "(schema)", "type": "unresolvable", "msg": msg}]
        for error in found:
            for entry in _entries(error):
                if (entry["loc"], entry["type"]) not in seen:
                    seen.add((entry["loc"], entry["type"]))
                    errors.append(entry)
        return errors


class GenericSettings(BaseModel):
    """``generic`` of a generic source: the JSON Schema its bodies must satisfy, and where the facts are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_file: Path
    device_id_pointer: str = "/deviceId"
    time_pointer: str | None = None
    group_pointer: str | None = None

    @field_validator("device_id_pointer", "time_pointer", "group_pointer")
    @classmethod
    def _is_pointer(cls, pointer: str | None) -> str | None:
        if pointer and not pointer.startswith("/"):
            msg = f"{pointer[:40]!r} is not a JSON Pointer; write it like /device/id"
            raise ValueError(msg)
        return pointer


class GenericOptions(VendorOptions):
    generic: GenericSettings


class Generic(JsonVendor):
    """A source's own JSON Schema and pointers, bound once at startup."""

    kind = "generic"
    type_prefix = "io.receiver.generic."
    events = {"message": GenericMessage}
    Options = GenericOptions

    def __init__(self, options: GenericOptions, schema: SchemaValidator | None = None) -> None:
        super().__init__(options)
        self.spec = options.generic
        self.schema = schema

    @classmethod
    def from_options(cls, options: GenericOptions) -> Self:
        return cls(options, SchemaValidator.from_file(options.generic.schema_file))

    def check(self, payload: GenericMessage) -> FieldErrors:
        """The schema's errors, then what the pointers cannot read."""
        obj = self.data(payload)
        errors: FieldErrors = self.schema.validate(obj) if self.schema is not None else []
        errors.extend(pointer_errors(obj, self.spec))
        return errors

    def subject(self, payload: GenericMessage) -> str:
        return subject(self.data(payload), self.spec)

    def time(self, payload: GenericMessage) -> float | None:
        return event_time(self.data(payload), self.spec)

    def group(self, payload: GenericMessage) -> str | None:
        return group(self.data(payload), self.spec)

    def reading(self, payload: GenericMessage) -> Reading | None:
        return reading(self.data(payload), self.spec)


def pointer_errors(obj: Any, options: GenericSettings) -> list[dict[str, str]]:
    """Field errors for a device id or time the pointers cannot read, to refuse the body with."""
    errors = []
    if not subject(obj, options):
        loc = _loc(options.device_id_pointer)
        errors.append({"loc": loc, "type": "device_id", "msg": "a non-empty string or integer device id is required"})
    value = _MISSING if options.time_pointer is None else resolve(obj, options.time_pointer)
    if options.time_pointer is not None and value is not _MISSING and _time(value) is None:
        msg = "must be Unix seconds or an RFC 3339 time with an offset"
        errors.append({"loc": _loc(options.time_pointer), "type": "time", "msg": msg})
    return errors


def subject(obj: Any, options: GenericSettings) -> str:
    """The device id at ``device_id_pointer`` as text, or ``""`` when there is none."""
    value = resolve(obj, options.device_id_pointer)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def event_time(obj: Any, options: GenericSettings) -> float | None:
    """The time at ``time_pointer`` as Unix seconds; ``None`` (the receive time) without one."""
    if options.time_pointer is None:
        return None
    moment = _time(resolve(obj, options.time_pointer))
    return None if moment is None else moment.timestamp()


def group(obj: Any, options: GenericSettings) -> str | None:
    if options.group_pointer is None:
        return None
    value = resolve(obj, options.group_pointer)
    return value if isinstance(value, str) and value else None


def reading(obj: Any, options: GenericSettings) -> Reading | None:
    """The device, time and group: a schema alone says nothing about units, so no other facts."""
    device = subject(obj, options)
    if not device:
        return None
    moment = _time(resolve(obj, options.time_pointer)) if options.time_pointer is not None else None
    return Reading(device_id=device, time=moment, group=group(obj, options))


def resolve(obj: Any, pointer: str) -> Any:
    """The value a JSON Pointer names, or a private marker when there is none."""
    if pointer == "":
        return obj
    value = obj
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and _INDEX.fullmatch(part):
            index = int(part)
            if index >= len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    return None


def _check_refs(node: Any, root: Any, name: str) -> None:
    """Refuse any reference that leaves the schema or names nothing in it, and any remote ``$id``.

    ``$ref`` and ``$dynamicRef`` must be fragments of this schema; an ``$id`` below the
    root would start another resource that references could be resolved against. The
    root may name itself (``$id``), as published schemas do. Nothing is ever fetched.
    """
    if isinstance(node, list):
        for item in node:
            _check_refs(item, root, name)
    if not isinstance(node, Mapping):
        return
    for keyword in ("$ref", "$dynamicRef"):
        ref = node.get(keyword)
        if isinstance(ref, str):
            fragment = unquote(ref[1:]) if ref.startswith("#") else None
            if fragment is None or (fragment.startswith("/") and resolve(root, fragment) is _MISSING):
                msg = f"{name} has {keyword} {ref[:80]!r}, which points to nothing inside the schema; use #/$defs/..."
                raise ValueError(msg)
    identifier = node.get("$id")
    if node is not root and isinstance(identifier, str):
        msg = f"{name} has $id {identifier[:80]!r} below its root; a schema here is one resource: drop it"
        raise ValueError(msg)
    for value in node.values():
        _check_refs(value, root, name)


def _loc(pointer: str) -> str:
    return ".".join(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")) or "(body)"


def _entries(error: SchemaValidationError) -> list[dict[str, str]]:
    """One error as field errors, its message built from the schema, never from the instance."""
    keyword = str(error.validator)
    path = [str(p) for p in error.absolute_path]
    if keyword == "required" and isinstance(error.instance, Mapping) and isinstance(error.validator_value, list):
        missing = [str(name) for name in error.validator_value if name not in error.instance]
        return [{"loc": ".".join([*path, name]), "type": "required", "msg": "field required"} for name in missing]
    constraint = error.validator_value
    if isinstance(constraint, str | int | float | bool) or (
        isinstance(constraint, list) and all(isinstance(c, str | int | float | bool) for c in constraint)
    ):
        quoted = json.dumps(constraint)
        if len(quoted) > _MAX_CONSTRAINT:
            quoted = quoted[: _MAX_CONSTRAINT - 3] + "..."
        msg = f"{keyword} failed: the schema says {keyword} {quoted}"
    else:
        msg = f"{keyword} failed"
    return [{"loc": ".".join(path) or "(body)", "type": keyword, "msg": msg}]
