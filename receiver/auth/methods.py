"""The authentication methods a source can use: one line each, and all the core derives from them.

A new method is one module (its settings model, its verifier, its ``METHOD``) and one
line in ``METHODS``. The settings union, the builders, the headers scrubbed from dead
letters, the codes the auth-failure metric counts and the OpenAPI schemes follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from receiver.auth import basic, bearer, hmac_signature, jwt, soracom_beam, soracom_funk, standard_webhooks
from receiver.auth.base import HTTP_CREDENTIAL_HEADERS, Method, MethodSettings

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        jwt.METHOD,
        bearer.METHOD,
        basic.METHOD,
        soracom_beam.METHOD,
        soracom_funk.METHOD,
        standard_webhooks.METHOD,
        hmac_signature.METHOD,
    )
}

if TYPE_CHECKING:
    AuthSettings = MethodSettings
else:  # the discriminated union of every method's settings, in registry order
    AuthSettings = Annotated[
        Union[tuple(m.settings for m in METHODS.values())],  # noqa: UP007 - built from the registry
        Field(discriminator="type"),
    ]

# Scrubbed from every source's dead letters and vendor view, whatever methods it uses.
CREDENTIAL_HEADERS = HTTP_CREDENTIAL_HEADERS.union(*(m.credential_headers for m in METHODS.values()))
