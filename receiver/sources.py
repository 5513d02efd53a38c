"""Sources as the pipeline uses them: settings joined with their vendor and verifiers.

Built once at startup (keys parsed, secrets read), so a request only looks one up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from receiver.auth import SourceAuth, build_source_auth
from receiver.errors import ConfigError
from receiver.settings import Settings, SourceSettings
from receiver.vendors import VENDORS, Vendor


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    settings: SourceSettings
    vendor: Vendor
    auth: SourceAuth

    @property
    def domain(self) -> str | None:
        return self.settings.domain


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
        sources[source_id] = Source(source_id, source, VENDORS[source.kind], auth)
    if problems:
        raise ConfigError(problems)
    return sources
