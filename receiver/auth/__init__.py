"""Authentication: who sent this request, proven by the method the source allows.

``SourceAuth`` picks the verifier by the scheme the request carries (``Bearer`` or
``Basic``); a request never falls through from one method to another, so a wrong
Bearer token is refused even when the source also accepts Basic.
"""

from __future__ import annotations

from receiver.auth.basic import BasicVerifier
from receiver.auth.jwt import JwtVerifier
from receiver.auth.principal import Principal, Verifier
from receiver.auth.source import SourceAuth, build_source_auth

__all__ = ["BasicVerifier", "JwtVerifier", "Principal", "SourceAuth", "Verifier", "build_source_auth"]
