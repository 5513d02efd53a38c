"""What the JWT-based methods share: PyJWT's options for a signature-only decode, numeric claims.

The time and identity rules are each method's own; PyJWT only checks the signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jwt.types import Options

from receiver.errors import InvalidTokenError

SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim in Unix seconds; anything but a number is an invalid token."""
    value = claims.get(name)
    if value is None:
        return None
    # NaN and infinities pass every comparison the time rules make (NaN is never "too old").
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"the token's `{name}` claim must be a finite number of Unix seconds"
        raise InvalidTokenError(msg)
    return float(value)
