"""Sources as the pipeline uses them: settings joined with their vendor and verifiers.

Built once at startup (keys parsed, secrets read), so a request only looks one up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from receiver.auth import SourceAuth, build_source_auth
from receiver.errors import ConfigError
from receiver.settings import Settings, SourceSettings
from receiver.vendors import VENDORS, Vendor, generic, generic_vendor, sigfox


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    settings: SourceSettings
    vendor: Vendor
    auth: SourceAuth

    @property
    def domain(self) -> str | None:
        return self.settings.domain


def _vendor(source: SourceSettings) -> Vendor:
    """The source's vendor; a generic one is bound to its schema and pointers here, once."""
    if source.kind == "sigfox":
        sigfox.check_options(source.options)
    if source.generic is None:
        return VENDORS[source.kind]
    spec = source.generic
    schema = generic.SchemaValidator.from_file(spec.schema_file)
    options = generic.GenericOptions(spec.device_id_pointer, spec.time_pointer, spec.group_pointer)
    return generic_vendor(schema, options)


def build_sources(settings: Settings) -> Mapping[str, Source]:
    """Every configured source, ready to serve; all problems are reported together."""
    sources: dict[str, Source] = {}
    problems: list[str] = []
    for source_id, source in settings.sources.items():
        try:
            auth = build_source_auth(source)
        except ConfigError as exc:
            problems.extend(f"sources.{source_id}.{p}" for p in exc.problems)
            continue
        try:
            vendor = _vendor(source)
        except ValueError as exc:
            problems.append(f"sources.{source_id}: {exc}")
            continue
        sources[source_id] = Source(source_id, source, vendor, auth)
    if problems:
        raise ConfigError(problems)
    return sources
