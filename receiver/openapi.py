"""The OpenAPI 3.1 description of the running receiver, generated from the code.

Nothing here is written by hand twice: request bodies are the vendors' pydantic models,
error codes and statuses come from the ``errors`` tree, security schemes from the
configured sources' verifiers (each built from its own settings), paths from the route
table's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver import __version__
from receiver.errors import error_codes
from receiver.sources import Source

_REF = "#/components/schemas/{model}"
_NOT_ON_DELIVERY = {"not_ready", "not_found", "method_not_allowed", "client_closed"}


def _error_body(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": codes},
            "message": {"type": "string", "description": "what to fix; never contains a credential"},
            "errors": {"type": "array", "items": {"$ref": _REF.format(model="FieldError")}},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }


def _errors(statuses: Mapping[int, list[str]]) -> dict[str, Any]:
    headers = {
        401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "the accepted scheme"}},
        405: {"Allow": {"schema": {"type": "string"}}},
        503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
    }
    responses: dict[str, Any] = {}
    for status, codes in statuses.items():
        response: dict[str, Any] = {
            "description": ", ".join(codes),
            "content": {"application/json": {"schema": _error_body(codes)}},
        }
        if status in headers:
            response["headers"] = headers[status]
        responses[str(status)] = response
    return responses


def _options(allow: str) -> dict[str, Any]:
    return {
        "summary": "The methods this path serves",
        "security": [],
        "responses": {
            "200": {"description": "empty", "headers": {"Allow": {"schema": {"type": "string", "example": allow}}}}
        },
    }


def _security(sources: Mapping[str, Source]) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    schemes: dict[str, Any] = {}
    for source in sources.values():
        for verifier in source.auth.verifiers:
            name, scheme = verifier.security_scheme()
            schemes[name] = scheme
    return schemes, [{name: []} for name in sorted(schemes)]


def _schemas(sources: Mapping[str, Source]) -> tuple[dict[str, Any], dict[str, dict[str, set[str]]]]:
    """Component schemas of every vendor model, and for each callback name: model -> source ids."""
    components: dict[str, Any] = {}
    by_event: dict[str, dict[str, set[str]]] = {}
    for source in sources.values():
        for event, model in source.vendor.events.items():
            if model.__name__ not in components:
                schema = model.model_json_schema(ref_template=_REF, by_alias=True)
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            by_event.setdefault(event, {}).setdefault(model.__name__, set()).add(source.id)
    components["FieldError"] = {
        "type": "object",
        "required": ["loc", "type", "msg"],
        "properties": {"loc": {"type": "string"}, "type": {"type": "string"}, "msg": {"type": "string"}},
    }
    components["AcceptedBatch"] = {
        "type": "object",
        "required": ["ids"],
        "properties": {"ids": {"type": "array", "items": {"type": "string"}, "description": "one per item, in order"}},
    }
    components["Accepted"] = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string", "description": "the CloudEvent id (same for a retried delivery)"}},
    }
    return components, by_event


def build_openapi(sources: Mapping[str, Source], *, dry_run: bool = False) -> dict[str, Any]:
    """The document served at ``/openapi.json`` for this configuration.

    The callback name in the URL decides the body's model, so each known name gets a
    path of its own (under both URL families), its ``source`` limited to the sources
    whose vendor has that callback.
    """
    components, by_event = _schemas(sources)
    schemes, security = _security(sources)
    delivery_errors = {
        status: [c for c in found if c not in _NOT_ON_DELIVERY]
        for status, found in error_codes().items()
        if any(c not in _NOT_ON_DELIVERY for c in found)
    }

    answered = {
        "200": {
            "description": "durably published (Kafka acknowledged, or the embedded store committed): the event id, "
            "a batch's ids, or the answer the vendor expects (a Sigfox downlink, a configured iotcomms answer)",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": _REF.format(model="Accepted")},
                            {"$ref": _REF.format(model="AcceptedBatch")},
                            {"type": "object"},
                        ]
                    }
                }
            },
        },
        "202": {
            "description": "invalid, kept on the dead-letter topic (sources with on_invalid: accept)",
            "content": {"application/json": {"schema": _error_body(["invalid_payload"])}},
        },
        "204": {"description": "published; the vendor expects no answer body (Sigfox bidir without a downlink)"},
    }

    def delivery(summary: str, models: Mapping[str, set[str]], *, query: bool = False) -> dict[str, Any]:
        refs = [{"$ref": _REF.format(model=name)} for name in sorted(models)]
        source_ids = sorted(set().union(*models.values()))
        allow = "GET, OPTIONS, POST" if query else "OPTIONS, POST"
        item: dict[str, Any] = {
            "parameters": [
                {
                    "name": "source",
                    "in": "path",
                    "required": True,
                    "description": "the source id from the config",
                    "schema": {"type": "string", "enum": source_ids},
                }
            ],
            "post": {
                "summary": summary,
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
                },
                "responses": {**answered, **_errors(delivery_errors)},
            },
            # OPTIONS describes the URL pattern, so it answers for any source id.
            "options": {
                **_options(allow),
                "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}],
            },
        }
        if query:
            item["get"] = {
                "summary": summary + ", as a GET query string (vendors that send them so)",
                "security": security,
                "responses": {**answered, **_errors(delivery_errors)},
            }
        return item

    def probe(summary: str, content: dict[str, Any], errors: Mapping[int, list[str]]) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "security": [],
                "responses": {"200": {"description": "ok", "content": content}, **_errors(errors)},
            },
            "options": _options("GET, HEAD, OPTIONS"),
        }

    status = {"application/json": {"schema": {"type": "object", "required": ["status"]}}}
    paths: dict[str, Any] = {}
    for event, models in sorted(by_event.items()):
        paths[f"/v1/callbacks/{{source}}/{event}"] = delivery(f"The {event} callback", models)
    for event, models in sorted(by_event.items()):
        # A GET query string only where a vendor with this callback sends them (Sigfox).
        senders = set().union(*models.values())
        query = any("" in sources[s].vendor.media_types for s in senders)
        paths[f"/v1/push/{{source}}/{event}"] = delivery(f"A {event} device push message", models, query=query)
    if dry_run:
        paths["/v1/dry-run/{source}/{event}"] = {
            "parameters": [
                {
                    "name": "source",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(sources)},
                },
                {"name": "event", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "post": {
                "summary": "What a request would publish: events, records, topics; nothing is published",
                "security": [{**entry, "dryRunToken": []} for entry in security] or [{"dryRunToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
                "responses": {
                    "200": {
                        "description": "the report",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(delivery_errors),
                },
            },
            "options": _options("OPTIONS, POST"),
        }
        schemes["dryRunToken"] = {"type": "apiKey", "in": "header", "name": "X-Dry-Run-Token"}
    paths["/healthz"] = probe("Liveness (no I/O)", status, {})
    paths["/readyz"] = probe("Readiness: config and publisher", status, {503: ["not_ready"]})
    paths["/metrics"] = probe("Prometheus metrics", {"text/plain": {}}, {})
    paths["/openapi.json"] = probe("This document", {"application/json": {}}, {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "IoT callback receiver",
            "version": __version__,
            "description": "Vendor callbacks and device push messages in, CloudEvents on Kafka out.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": schemes},
    }
