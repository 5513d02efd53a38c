"""The settings of each authentication method a source can use (part of the settings tree).

Every credential may carry an ``id`` (shown in logs, audit records and metrics instead
of the secret) and a ``not_after`` instant after which it is refused, so a rotation
can be scheduled in the config and a forgotten one shows up in the expiry metric.
Secrets are ``SecretStr`` or files read once at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def read_secret(path: Path) -> SecretStr:
    """Read a secret file as mounted by Kubernetes: trailing newline dropped, nothing else."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read secret file {path}: {exc.strerror}"
        raise ValueError(msg) from exc
    value = text.rstrip("\r\n")
    if not value:
        msg = f"secret file {path} is empty"
        raise ValueError(msg)
    return SecretStr(value)


class KeyFile(_Frozen):
    """A public key in a PEM file, with its key id (``kid``) and expiry."""

    path: Path
    kid: str | None = None
    not_after: AwareDatetime | None = None


class Secret(_Frozen):
    """A shared secret given inline or as a file, with an id and an expiry."""

    value: SecretStr | None = None
    file: Path | None = None
    id: str | None = Field(default=None, description="names the secret in logs and metrics; `kid` for JWT")
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.value is None) == (self.file is None):
            msg = "give exactly one of value or file"
            raise ValueError(msg)
        return self

    def secret(self) -> SecretStr:
        if self.value is not None:
            return self.value
        assert self.file is not None
        return read_secret(self.file)


def _as_key_file(value: object) -> object:
    return {"path": value} if isinstance(value, str | Path) else value


class JwtAuthSettings(_Frozen):
    """JWT bearer tokens: public keys (PEM or JWKS, chosen by ``kid``) or HMAC secrets."""

    type: Literal["jwt"]
    algorithms: list[Algorithm] = Field(default=["RS256"], min_length=1)
    public_keys: list[KeyFile] = Field(default_factory=list, description="PEM files (plain paths accepted)")
    jwks_file: Path | None = Field(default=None, description="a JWKS document; keys chosen by `kid`")
    secrets: list[Secret] = Field(default_factory=list, description="HMAC secrets for HS256/384/512")
    subject: str | None = Field(default=None, description="required `sub`; defaults to the source's domain")
    issuer: str | None = Field(default=None, description="required `iss`, when set")
    audience: str | None = Field(default=None, description="required in `aud`, when set")
    require_iat: bool = True
    max_age_seconds: int | None = Field(default=3600, gt=0, description="oldest accepted `iat`; null: no limit")
    max_lifetime_seconds: int | None = Field(default=5400, gt=0, description="largest `exp - iat`; null: no limit")
    leeway_seconds: int = Field(default=30, ge=0, le=300, description="clock skew allowed")
    require_exp: bool = False
    reject_replayed_jti: bool = Field(default=False, description="a `jti` seen before within its lifetime fails")

    @field_validator("public_keys", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        return [_as_key_file(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _has_material(self) -> JwtAuthSettings:
        wants_hmac = any(a in HMAC_ALGORITHMS for a in self.algorithms)
        wants_keys = any(a not in HMAC_ALGORITHMS for a in self.algorithms)
        if wants_hmac and not self.secrets:
            raise ValueError("HS256/HS384/HS512 need `secrets`")
        if wants_keys and not (self.public_keys or self.jwks_file):
            raise ValueError("asymmetric algorithms need `public_keys` or `jwks_file`")
        if self.secrets and not wants_hmac:
            raise ValueError("`secrets` are only used with HS256/HS384/HS512 in `algorithms`")
        return self


class BearerToken(_Frozen):
    """A static bearer token, kept as its SHA-256 digest or read from a file."""

    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="hex digest of the token")
    file: Path | None = None
    id: str | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BearerToken:
        if (self.sha256 is None) == (self.file is None):
            raise ValueError("give exactly one of sha256 or file")
        return self


class BearerAuthSettings(_Frozen):
    """Static ``Authorization: Bearer`` tokens (several live at once for rotation)."""

    type: Literal["bearer"]
    tokens: list[BearerToken] = Field(min_length=1)


class BasicAuthSettings(_Frozen):
    """HTTP Basic credentials; the password as an Argon2 hash (preferred) or a plain secret."""

    type: Literal["basic"]
    username: str = Field(min_length=1)
    password_hash: str | None = Field(default=None, description="from `receiver hash-password`")
    password_hash_file: Path | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuthSettings:
        given = [self.password_hash, self.password_hash_file, self.password, self.password_file]
        if sum(v is not None for v in given) != 1:
            msg = "give exactly one of password_hash, password_hash_file, password or password_file"
            raise ValueError(msg)
        return self


class SoracomBeamAuthSettings(_Frozen):
    """Soracom Beam's ``X-Soracom-Signature`` (version 20151001) with pre-shared keys."""

    type: Literal["soracom_beam"]
    keys: list[Secret] = Field(min_length=1, description="the pre-shared key(s) set in Beam")
    replay_window_seconds: int = Field(default=300, gt=0, description="oldest accepted x-soracom-timestamp")


class SoracomFunkAuthSettings(_Frozen):
    """Soracom Funk's ``x-soracom-token``: an RS256 JWT whose ``kid`` picks the public key."""

    type: Literal["soracom_funk"]
    public_keys: list[KeyFile] = Field(min_length=1, description="Soracom's signing keys, each with its kid")
    issuer: str = "https://soracom.io"
    operator_id: str = Field(
        min_length=1, description="your Soracom operator id; tokens must carry it as `ctx.operatorId`"
    )
    max_age_seconds: int = Field(default=300, gt=0, description="oldest accepted `iat` (Funk signs each request)")
    leeway_seconds: int = Field(default=30, ge=0, le=300)

    @field_validator("public_keys", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        return [_as_key_file(v) for v in value] if isinstance(value, list) else value


class StandardWebhooksAuthSettings(_Frozen):
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (v1, HMAC-SHA256)."""

    type: Literal["standard_webhooks"]
    secrets: list[Secret] = Field(min_length=1, description="`whsec_...` secrets")
    tolerance_seconds: int = Field(default=300, gt=0)


class HmacAuthSettings(_Frozen):
    """An HMAC-SHA256 of the raw body in one header (GitHub's ``X-Hub-Signature-256: sha256=<hex>``)."""

    type: Literal["hmac"]
    header: str = "X-Hub-Signature-256"
    prefix: str = "sha256="
    encoding: Literal["hex", "base64"] = "hex"
    secrets: list[Secret] = Field(min_length=1)


AuthSettings = Annotated[
    JwtAuthSettings
    | BearerAuthSettings
    | BasicAuthSettings
    | SoracomBeamAuthSettings
    | SoracomFunkAuthSettings
    | StandardWebhooksAuthSettings
    | HmacAuthSettings,
    Field(discriminator="type"),
]
