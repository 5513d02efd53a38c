"""Every error the receiver raises, and the HTTP answer each one maps to.

One tree, one base class. Request errors carry a stable ``code`` (documented in the
README; clients branch on it) and a ``message`` a sender can act on. Messages never
contain a credential: the detail that helps an operator goes to the log instead.

    ReceiverError
    ├── ConfigError                     bad settings; startup fails, no HTTP status
    ├── RequestError                    the request is refused; answered with ``status`` and ``code``
    │   ├── NotFoundError               404 not_found           no such path
    │   ├── MethodNotAllowedError       405 method_not_allowed  (carries ``Allow``)
    │   ├── UnknownSourceError          404 unknown_source      no source with that id
    │   ├── AuthError                   401 (carries ``WWW-Authenticate``)
    │   │   ├── AuthRequiredError       auth_required           no credentials this source accepts
    │   │   ├── InvalidCredentialsError invalid_credentials     Basic/Bearer credentials do not match
    │   │   ├── InvalidTokenError       invalid_token           malformed, bad signature, alg not allowed
    │   │   ├── TokenExpiredError       token_expired           ``exp`` has passed
    │   │   ├── TokenTooOldError        token_too_old           ``iat`` older than the source allows
    │   │   ├── TokenNotYetValidError   token_not_yet_valid     ``iat`` or ``nbf`` in the future
    │   │   ├── TokenLifetimeExceededError token_lifetime_exceeded  ``exp - iat`` over the limit
    │   │   ├── SubjectMismatchError    subject_mismatch        ``sub`` is not the source's domain
    │   │   ├── InvalidSignatureError   invalid_signature       Beam / Standard Webhooks / HMAC signature wrong
    │   │   │   └── SignatureExpiredError signature_expired     signed timestamp outside the window
    │   │   └── ReplayedRequestError    replayed_request        a signed request id already used for another body
    │   ├── ForbiddenError              403 forbidden           roles or groups do not allow it
    │   ├── IpNotAllowedError           403 ip_not_allowed      client address not in the source's allow-list
    │   ├── RateLimitedError            429 rate_limited        over budget, or an expensive check (Argon2, an
    │   │                                                       uncached public-key JWT) from a blocked address
    │   │                                                       (carries ``Retry-After``, ``X-RateLimit-*``)
    │   ├── RequestTimeoutError         408 request_timeout     headers or body slower than the server's deadlines
    │   ├── PayloadTooLargeError        413 payload_too_large
    │   ├── HeadersTooLargeError        431 headers_too_large   header bytes or count over the server's limits
    │   ├── ClientClosedError           499 client_closed       the client went away mid-request (no answer reaches it)
    │   └── ContentError                refused for what the body is; an authenticated one is dead-lettered
    │       ├── UnknownEventError       404 unknown_event       the source's vendor has no such callback
    │       ├── UnsupportedMediaTypeError 415 unsupported_media_type
    │       ├── BatchTooLargeError      413 batch_too_large     more items than ``max_batch_items``, or records than
    │       │                                                   the pending cap can ever hold
    │       ├── RecordTooLargeError     413 record_too_large    an event's record over the producer's request size
    │       └── InvalidPayloadError     422 invalid_payload     (carries the field errors)
    └── UnavailableError                503 (carries ``Retry-After``)
        ├── NotReadyError               503 not_ready           config or producer not up yet
        ├── OverloadedError             503 overloaded          shed before the body: waited past max_wait_ms,
        │                                                       reading or in-flight slots full, Kafka backlog full
        ├── KafkaUnavailableError       503 kafka_unavailable   no acknowledgement in time
        ├── StoreUnavailableError       503 store_unavailable   the embedded store could not commit
        └── StateUnavailableError       503 state_unavailable   the shared state (Redis) did not answer in time
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""


class ConfigError(ReceiverError):
    """The configuration is invalid; ``problems`` lists ``path.to.key: what is wrong`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))


class RequestError(ReceiverError):
    """A refused request: subclasses fix ``status`` and ``code``; ``message`` is per instance."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    abstract: ClassVar[bool] = True  # a family, never raised as itself; subclasses do not inherit the mark

    def __init__(self, message: str) -> None:
        self.message = message
        self.extra_headers: dict[str, str] = {}  # added on the way out, e.g. rate-limit state
        super().__init__(message)

    def headers(self) -> Mapping[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class NotFoundError(RequestError):
    status, code = 404, "not_found"


class MethodNotAllowedError(RequestError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, allow: Sequence[str]) -> None:
        super().__init__(message)
        self.allow = ", ".join(allow)

    def headers(self) -> Mapping[str, str]:
        return {"Allow": self.allow}


class UnknownSourceError(RequestError):
    status, code = 404, "unknown_source"


class AuthError(RequestError):
    """Authentication failed; the body stays generic, the reason goes to the log."""

    status, code = 401, "auth_failed"
    abstract = True
    challenge: str = 'Bearer realm="receiver"'

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": self.challenge} if self.challenge else {}


class AuthRequiredError(AuthError):
    code = "auth_required"

    def __init__(self, message: str, challenges: Sequence[str] = ()) -> None:
        super().__init__(message)
        if challenges:
            self.challenge = ", ".join(challenges)


class InvalidCredentialsError(AuthError):
    code = "invalid_credentials"


class InvalidTokenError(AuthError):
    code = "invalid_token"
    challenge = 'Bearer realm="receiver", error="invalid_token"'


class TokenExpiredError(InvalidTokenError):
    code = "token_expired"


class TokenTooOldError(InvalidTokenError):
    code = "token_too_old"


class TokenNotYetValidError(InvalidTokenError):
    code = "token_not_yet_valid"


class TokenLifetimeExceededError(InvalidTokenError):
    code = "token_lifetime_exceeded"


class SubjectMismatchError(InvalidTokenError):
    code = "subject_mismatch"


class InvalidSignatureError(AuthError):
    """A signature over headers and body (Soracom Beam, Standard Webhooks, HMAC) does not verify."""

    code = "invalid_signature"
    challenge = ""


class SignatureExpiredError(InvalidSignatureError):
    """The signed timestamp is outside the accepted window."""

    code = "signature_expired"


class ReplayedRequestError(AuthError):
    """A signed request id (Beam signature, ``webhook-id``, ``jti``) came back with another body within its window."""

    code = "replayed_request"
    challenge = ""


class ForbiddenError(RequestError):
    """Authenticated, but the credential does not grant this (roles, groups)."""

    status, code = 403, "forbidden"


class IpNotAllowedError(RequestError):
    """The client address is outside the source's allow-list."""

    status, code = 403, "ip_not_allowed"


class RateLimitedError(RequestError):
    """Over the source's request budget, or an expensive check asked for by an address over its failure limit."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: int, limit_headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit_headers = dict(limit_headers or {})

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after), **self.limit_headers}


class RequestTimeoutError(RequestError):
    """The client did not send its headers or body within the deadline; the connection is closed."""

    status, code = 408, "request_timeout"

    def headers(self) -> Mapping[str, str]:
        return {"Connection": "close"}


class PayloadTooLargeError(RequestError):
    status, code = 413, "payload_too_large"


class HeadersTooLargeError(RequestError):
    """The request's headers are larger, or more numerous, than ``server.max_header_*`` allow."""

    status, code = 431, "headers_too_large"


class ClientClosedError(RequestError):
    """The client closed the connection before its request was read: its abort, not our failure."""

    status, code = 499, "client_closed"


class ContentError(RequestError):
    """Refused for its content; when the sender was authenticated, the delivery is dead-lettered first."""

    abstract = True


class UnknownEventError(ContentError):
    status, code = 404, "unknown_event"


class UnsupportedMediaTypeError(ContentError):
    status, code = 415, "unsupported_media_type"


class BatchTooLargeError(ContentError):
    """A batch larger than the source takes (``max_batch_items``) or than ``kafka.max_pending_records`` holds.

    Refused before its items are validated, or before anything is published; split it.
    """

    status, code = 413, "batch_too_large"


class RecordTooLargeError(ContentError):
    """An event whose Kafka record would exceed the producer's request size: refused before it is sent."""

    status, code = 413, "record_too_large"


class InvalidPayloadError(ContentError):
    """The body is not valid JSON or does not match the callback's schema."""

    status, code = 422, "invalid_payload"

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = [dict(e) for e in errors]

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": self.errors}


class UnavailableError(RequestError):
    """The receiver cannot take the request now; the sender should retry later."""

    status, code = 503, "unavailable"
    abstract = True
    retry_after: int = 5

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReadyError(UnavailableError):
    code = "not_ready"


class OverloadedError(UnavailableError):
    """Shed at once (``receiver.gate``): too late, too many bodies reading or deliveries in flight, Kafka behind."""

    code = "overloaded"
    retry_after = 1


class KafkaUnavailableError(UnavailableError):
    code = "kafka_unavailable"


class StoreUnavailableError(UnavailableError):
    code = "store_unavailable"


class StateUnavailableError(UnavailableError):
    """A single-use id could not be reserved: the shared state did not answer, and the source fails closed."""

    code = "state_unavailable"
    retry_after = 2


def error_classes(base: type[RequestError] = RequestError) -> Iterator[type[RequestError]]:
    """Every class under ``base`` that is raised as itself (not a family)."""
    for cls in base.__subclasses__():
        if "abstract" not in vars(cls):
            yield cls
        yield from error_classes(cls)


def error_codes() -> dict[int, list[str]]:
    """Every stable error code by HTTP status, read off the tree (500 is the one unplanned answer)."""
    by_status: dict[int, set[str]] = {500: {"internal_error"}}
    for cls in error_classes():
        by_status.setdefault(cls.status, set()).add(cls.code)
    return {status: sorted(codes) for status, codes in sorted(by_status.items())}


def auth_codes() -> frozenset[str]:
    """The codes of refused authentications: what the auth-failure metric counts."""
    return frozenset(cls.code for cls in error_classes(AuthError))
