"""Sources as the pipeline uses them: settings joined with their vendor and verifiers.

Built once at startup (keys parsed, secrets read, schemas loaded), so a request only
looks one up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from receiver.auth import SourceAuth, build_source_auth
from receiver.auth.methods import METHODS
from receiver.errors import ConfigError
from receiver.settings import Settings, SourceSettings
from receiver.vendors import VENDORS, Vendor


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    settings: SourceSettings
    vendor: Vendor
    auth: SourceAuth


def build_source(source_id: str, settings: SourceSettings) -> Source:
    """One source, ready to serve; a problem is a ``ConfigError`` naming its key."""
    try:
        vendor = VENDORS[settings.kind].from_options(settings)
    except ValueError as exc:
        raise ConfigError([f"sources.{source_id}: {exc}"]) from exc
    if "" in vendor.media_types:  # the vendor may send its message as a query string
        # A proof of the body alone would leave the message itself unsigned (a GET, or a
        # POST without Content-Type, is read from the query): refused here, not per request.
        unsigned = [
            f"sources.{source_id}.auth.{n}: {a.type} signs only the body, but {vendor.kind} may send its message "
            "as a query string, which it does not cover; use jwt, bearer or basic for this source"
            for n, a in enumerate(settings.auth)
            if METHODS[a.type].signs_only_body
        ]
        if unsigned:
            raise ConfigError(unsigned)
    try:
        auth = build_source_auth(
            settings.auth,
            default_subject=vendor.credential_subject,
            require_roles=settings.require_roles,
            restrict_to_token_groups=settings.restrict_to_token_groups,
        )
    except ConfigError as exc:
        raise ConfigError([f"sources.{source_id}.{p}" for p in exc.problems]) from exc
    return Source(source_id, settings, vendor, auth)


def build_sources(settings: Settings) -> Mapping[str, Source]:
    """Every configured source, ready to serve; all problems are reported together."""
    sources: dict[str, Source] = {}
    problems: list[str] = []
    for source_id, source in settings.sources.items():
        try:
            sources[source_id] = build_source(source_id, source)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return sources
