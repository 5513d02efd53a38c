"""JSON Schemas of every inbound payload and outbound envelope, generated from the models.

``receiver schemas export`` writes them under ``schemas/``; a test fails when the
checked-in files drift from the models, so downstream teams in any language can
generate their types from files that are always current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from receiver.vendors import VENDORS, JsonVendor
from receiver.vendors.base import Reading

_ENVELOPE_REQUIRED = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"]


def envelope_schema(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """CloudEvents 1.0 structured mode, with this type's data schema."""
    defs = data.pop("$defs", {})
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type,
        "type": "object",
        "required": [*_ENVELOPE_REQUIRED, "receivedtime", "sourceid"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "same for a retried delivery"},
            "source": {"type": "string", "format": "uri-reference"},
            "type": {"const": event_type},
            "subject": {"type": "string", "description": "device id, or the customer domain; the Kafka key"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "receivedtime": {"type": "string", "format": "date-time"},
            "sourceid": {"type": "string"},
            "seqstatus": {"enum": ["first", "ok", "gap", "repeat", "reset"]},
            "seqmissed": {"type": "string"},
            "data": data,
        },
    }
    if defs:
        schema["$defs"] = defs
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """``relative path -> schema`` for every vendor model and event type."""
    out: dict[str, dict[str, Any]] = {}
    # A generic source's body schema is its own file: its model here is "any JSON object".
    for vendor in VENDORS.values():
        for event, model in sorted(vendor.events.items()):
            inbound = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
            out[f"inbound/{vendor.kind}.{event}.json"] = inbound
            event_type = vendor.type_prefix + event
            data = json.loads(json.dumps(inbound))
            if vendor.reading is not JsonVendor.reading:  # the vendor puts its facts into a Reading
                reading = Reading.model_json_schema(ref_template="#/$defs/{model}")
                defs = {**reading.pop("$defs", {}), **data.pop("$defs", {}), model.__name__: data}
                reading["properties"]["raw"] = {"$ref": f"#/$defs/{model.__name__}"}
                reading["$defs"] = defs
                data = reading
            out[f"events/{event_type}.json"] = envelope_schema(event_type, data)
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(directory: Path) -> list[Path]:
    """Write every schema under ``directory``, removing files of models that no longer exist."""
    schemas = all_schemas()
    written = []
    for relative, schema in schemas.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*/*.json"):
        if str(stale.relative_to(directory)) not in schemas:
            stale.unlink()
    return written


def drift(directory: Path) -> list[str]:
    """Files that differ from the models (missing, changed or stale)."""
    schemas = all_schemas()
    problems = []
    for relative, schema in schemas.items():
        path = directory / relative
        if not path.exists():
            problems.append(f"{relative}: missing")
        elif path.read_text(encoding="utf-8") != render(schema):
            problems.append(f"{relative}: differs from the model")
    problems += [
        f"{stale.relative_to(directory)}: no model any more"
        for stale in sorted(directory.glob("*/*.json"))
        if str(stale.relative_to(directory)) not in schemas
    ]
    return problems
