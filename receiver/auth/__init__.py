"""Authentication: who sent this request, proven by the method the source allows.

``SourceAuth`` picks the verifier by the credential the request carries (a JWT-shaped
Bearer token, a static Bearer token, Basic, or a vendor signature header); a request
never falls through from one method to another. ``methods.METHODS`` lists the methods.
"""

from __future__ import annotations

from receiver.auth.base import Credentials, Expiry, Principal, SingleUse, Verifier
from receiver.auth.source import SourceAuth, build_source_auth

__all__ = ["Credentials", "Expiry", "Principal", "SingleUse", "SourceAuth", "Verifier", "build_source_auth"]
