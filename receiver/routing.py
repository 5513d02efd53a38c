"""Routing: which topics an event goes to, under which key and with which headers.

Rules from the config are tried in order and the first match decides; without a match
the default applies: ``<topic_prefix>.<kind>.<event>`` (or the source's ``topic``),
keyed by the subject, so one device's events keep their order on one partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from receiver.events import CLOUDEVENTS_JSON, CloudEvent, Record
from receiver.settings import RouteRule


@dataclass(frozen=True, slots=True)
class Facts:
    """What a rule can match on."""

    source: str
    kind: str
    event: str
    subject: str
    group: str | None


def topic_for(prefix: str, kind: str, event: str, override: str | None = None) -> str:
    return override or f"{prefix}.{kind}.{event}"


def matching_rule(rules: Sequence[RouteRule], facts: Facts) -> RouteRule | None:
    for rule in rules:
        m = rule.match
        if (
            (m.source is None or m.source == facts.source)
            and (m.kind is None or m.kind == facts.kind)
            and (m.event is None or m.event == facts.event)
            and (m.group is None or m.group == facts.group)
            and (m.subject is None or fnmatchcase(facts.subject, m.subject))
        ):
            return rule
    return None


def route(event: CloudEvent, topic: str, rule: RouteRule | None = None, facts: Facts | None = None) -> list[Record]:
    """The Kafka records for one event: structured-mode CloudEvent with ``ce_*`` headers."""
    headers = [
        ("content-type", CLOUDEVENTS_JSON.encode()),
        ("ce_id", event.id.encode()),
        ("ce_type", event.type.encode()),
        ("ce_source", event.source.encode()),
    ]
    value = event.to_json()
    if rule is None:
        return [Record(topic=topic, key=event.subject.encode(), value=value, headers=headers)]
    headers += [(name, text.encode()) for name, text in rule.headers.items()]
    key = {
        "subject": event.subject,
        "device": event.subject,
        "source": facts.source if facts else event.subject,
        "none": "",
    }[rule.key]
    return [Record(topic=t, key=key.encode(), value=value, headers=headers) for t in rule.topics]
