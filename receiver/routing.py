"""Routing: which topics an event goes to, under which key and with which headers.

Rules from the config are tried in order and the first match decides; without a match
the default applies: ``<topic_prefix>.<kind>.<event>`` (or the source's ``topic``),
keyed by the subject, so one device's events keep their order on one partition.
``destination`` is the one table: the pipeline and ``receiver routes test`` both call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pydantic_core import to_json as json_bytes

from receiver.events import CLOUDEVENTS_JSON, CloudEvent, Record
from receiver.settings import ContentMode, RouteRule


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Facts:
    """What a rule can match on."""

    source: str
    kind: str
    event: str
    subject: str
    group: str | None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one event goes: topics, the record key, extra headers, and the rule that said so."""

    topics: Sequence[str]
    key: str
    headers: Sequence[tuple[str, str]] = ()
    rule: int | None = None  # the index of the matching rule; None: the default


def topic_for(prefix: str, kind: str, event: str, override: str | None = None) -> str:
    return override or f"{prefix}.{kind}.{event}"


def matching_rule(rules: Sequence[RouteRule], facts: Facts) -> int | None:
    for index, rule in enumerate(rules):
        m = rule.match
        if (
            (m.source is None or m.source == facts.source)
            and (m.kind is None or m.kind == facts.kind)
            and (m.event is None or m.event == facts.event)
            and (m.group is None or m.group == facts.group)
            and (m.subject is None or fnmatchcase(facts.subject, m.subject))
        ):
            return index
    return None


def destination(facts: Facts, rules: Sequence[RouteRule], prefix: str, source_topic: str | None = None) -> Destination:
    """The first matching rule's topics, key and headers, else the default topic keyed by subject."""
    index = matching_rule(rules, facts)
    if index is None:
        return Destination([topic_for(prefix, facts.kind, facts.event, source_topic)], facts.subject)
    rule = rules[index]
    key = {"subject": facts.subject, "device": facts.subject, "source": facts.source, "none": ""}[rule.key]
    return Destination(rule.topics, key, tuple(rule.headers.items()), index)


def route(event: CloudEvent, where: Destination, mode: ContentMode = "structured") -> list[Record]:
    """The Kafka records for one event, in the CloudEvents Kafka binding's content mode.

    Structured: the whole envelope is the value, ``content-type`` says so, and no header
    starts with ``ce_`` (a reader would take it for binary mode). Binary: the data is the
    value, every attribute a ``ce_`` header, ``content-type`` the data's type.
    """
    if mode == "binary":
        headers, value = event.binary_headers(), json_bytes(event.data)
    else:
        headers, value = [("content-type", CLOUDEVENTS_JSON.encode())], event.to_json()
    headers += [(name, text.encode()) for name, text in where.headers]
    key = where.key.encode()
    return [Record(topic=topic, key=key, value=value, headers=headers, event_id=event.id) for topic in where.topics]
