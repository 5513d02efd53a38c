"""Soracom Beam's signature header (version 20151001), checked against pre-shared keys.

Beam adds ``x-soracom-signature``: the lower-case hex SHA-256 of the pre-shared key
followed by the identity headers it added and the timestamp, each as ``name=value``,
in the fixed order Soracom documents (not the order the headers arrive in)::

    {PSK}x-soracom-imei={IMEI}x-soracom-imsi={IMSI}x-soracom-msisdn={MSISDN}
         x-soracom-sim-id={SIM-ID}x-soracom-timestamp={TS}

Only the headers Beam was told to add are present, and only those are signed. Sigfox
and LoRaWAN devices sign ``x-soracom-sigfox-device-id`` / ``x-soracom-lora-device-id``
and Inventory devices ``x-device-id`` or ``x-soracom-device-id`` instead; the cellular
headers win when both kinds appear, as in Soracom's reference verifier, because a
device's own headers pass through. What was signed is the principal's ``proven``
identity: the vendor takes the device from it alone, so an unsigned identity header
(an ``X-Device-Id`` beside a signed IMSI, an ``x-soracom-operator-id``) counts for nothing.

The signature covers neither the body nor the path: it proves that Beam forwarded a
request from that SIM at that time, and TLS between Beam and us protects the rest. So
a signature is accepted once (within the window) and the timestamp must be recent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Self

from pydantic import Field

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal, SingleUse
from receiver.auth.material import LiveSecret, Secret, first_match, load_secrets
from receiver.errors import InvalidSignatureError, ReplayedRequestError, SignatureExpiredError

SIGNATURE_VERSION = "20151001"
# Each group in signing order; the first group with a header present is the one signed.
_IDENTITY_GROUPS = (
    ("x-soracom-imei", "x-soracom-imsi", "x-soracom-msisdn", "x-soracom-sim-id"),
    ("x-soracom-sigfox-device-id",),
    ("x-soracom-lora-device-id",),
    ("x-device-id",),
    ("x-soracom-device-id",),
)
# The principal's name: the most specific identity present.
_NAME_ORDER = (
    "x-soracom-imsi",
    "x-soracom-sim-id",
    "x-soracom-imei",
    "x-soracom-msisdn",
    "x-soracom-sigfox-device-id",
    "x-soracom-lora-device-id",
    "x-device-id",
    "x-soracom-device-id",
)
# No '=' allowed: a value can then never smuggle in a `name=` label of its own.
_IDENTITY_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class SoracomBeamAuthSettings(MethodSettings):
    """Soracom Beam's ``X-Soracom-Signature`` (version 20151001) with pre-shared keys."""

    type: Literal["soracom_beam"]
    keys: list[Secret] = Field(min_length=1, description="the pre-shared key(s) set in Beam")
    replay_window_seconds: int = Field(default=300, gt=0, description="oldest accepted x-soracom-timestamp")


def string_to_sign(identity: Sequence[tuple[str, str]], timestamp: str) -> bytes:
    """The part after the pre-shared key: ``name=value`` pairs, then the timestamp."""
    pairs = [*identity, ("x-soracom-timestamp", timestamp)]
    return "".join(f"{name}={value}" for name, value in pairs).encode("latin-1")


class SoracomBeamVerifier:
    """Verifies ``x-soracom-signature`` for one source; several keys may be live at once."""

    method = "soracom_beam"
    challenge: str | None = None
    credential_headers = frozenset({"x-soracom-signature"})

    def __init__(self, keys: Sequence[LiveSecret], window_seconds: int) -> None:
        self._keys = list(keys)
        self._window = window_seconds

    @classmethod
    def from_settings(cls, settings: SoracomBeamAuthSettings, default_subject: str | None = None) -> Self:
        del default_subject
        return cls(load_secrets(settings.keys, "keys"), settings.replay_window_seconds)

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "apiKey", "in": "header", "name": "X-Soracom-Signature"}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        del credentials
        return False  # hashes and MACs: cheap enough to check for a blocked address too

    def carries(self, credentials: Credentials) -> bool:
        return any(credentials.header(n) is not None for n in ("x-soracom-signature", "x-soracom-signature-version"))

    def verify(self, credentials: Credentials) -> Principal:
        signature, timestamp = self._signature_headers(credentials)
        identity = _identity(credentials)
        signed, given = string_to_sign(identity, timestamp), signature.encode()
        key = first_match(
            self._keys,
            credentials.now,
            lambda psk: hmac.compare_digest(hashlib.sha256(psk + signed).hexdigest().encode(), given),
        )
        if key is None:
            msg = "the x-soracom-signature does not match; check the pre-shared key set in Beam"
            raise InvalidSignatureError(msg)
        signed_at = int(timestamp) / 1000
        if credentials.now - signed_at > self._window:
            msg = f"the x-soracom-timestamp is more than {self._window} s old; send a fresh request"
            raise SignatureExpiredError(msg)
        if signed_at - credentials.now > self._window:
            msg = f"the x-soracom-timestamp is more than {self._window} s in the future; check the clocks"
            raise SignatureExpiredError(msg)
        replayed = "this Soracom Beam signature was already used for another request; send a fresh request"
        once = SingleUse(signature, signed_at + self._window, replayed)
        values = dict(identity)
        name = next(values[n] for n in _NAME_ORDER if n in values)
        proven = {**values, "x-soracom-timestamp": timestamp}
        return Principal(
            method=self.method,
            name=name,
            key_id=key.id,
            claims=proven,
            proven=proven,
            single_use=once,
            devices=frozenset(values.values()),
        )

    def expiries(self) -> Iterable[Expiry]:
        return [Expiry(self.method, k.id, k.not_after) for k in self._keys if k.not_after is not None]

    @staticmethod
    def _signature_headers(credentials: Credentials) -> tuple[str, str]:
        """The signature (lower case) and the timestamp, once all three headers are well-formed."""
        version = _required(credentials, "x-soracom-signature-version")
        signature = _required(credentials, "x-soracom-signature")
        timestamp = _required(credentials, "x-soracom-timestamp")
        if version != SIGNATURE_VERSION:
            msg = f"the x-soracom-signature-version header must be {SIGNATURE_VERSION}"
            raise InvalidSignatureError(msg)
        if not _HEX_DIGEST.fullmatch(signature):
            raise InvalidSignatureError("the x-soracom-signature header is malformed; expected 64 hex digits")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise InvalidSignatureError("the x-soracom-timestamp header is malformed; expected Unix milliseconds")
        return signature.lower(), timestamp


def _required(credentials: Credentials, name: str) -> str:
    value = credentials.header(name)
    if value is None:
        msg = f"the {name} header is missing; enable the signature header in Beam"
        raise InvalidSignatureError(msg)
    return value.strip()


def _identity(credentials: Credentials) -> list[tuple[str, str]]:
    """The signed identity headers in signing order, from the first group present."""
    for group in _IDENTITY_GROUPS:
        present = [(name, credentials.header(name)) for name in group]
        identity = [(name, value.strip()) for name, value in present if value is not None]
        if not identity:
            continue
        for name, value in identity:
            if not _IDENTITY_VALUE.fullmatch(value):
                msg = f"the {name} header is malformed"
                raise InvalidSignatureError(msg)
        return identity
    msg = "no x-soracom-imsi, -imei, -msisdn or -sim-id header; enable at least one identity header in Beam"
    raise InvalidSignatureError(msg)


METHOD = Method(
    name=SoracomBeamVerifier.method,
    settings=SoracomBeamAuthSettings,
    build=SoracomBeamVerifier.from_settings,
    codes=frozenset({InvalidSignatureError, SignatureExpiredError, ReplayedRequestError}),
    credential_headers=SoracomBeamVerifier.credential_headers,
)
