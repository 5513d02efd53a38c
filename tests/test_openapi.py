"""The generated OpenAPI document, and schemathesis fuzzing the live server against it."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from receiver.errors import RequestError, error_codes
from tests.conftest import BASIC_PASSWORD, DOMAIN
from tests.support.server import run_receiver


def test_document_lists_every_error_code(store_client: TestClient) -> None:
    """The served document names each concrete error code under its status, read off the error tree."""
    document = store_client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    responses = document["paths"]["/v1/callbacks/{source}/message"]["post"]["responses"]
    documented = {code for r in responses.values() for code in _codes(r)}
    assert {"auth_required", "invalid_token", "token_too_old", "invalid_payload", "kafka_unavailable"} <= documented
    assert "auth_failed" not in documented  # an abstract family, never answered
    for status, codes in error_codes().items():
        for code in codes:
            assert any(cls.code == code and cls.status == status for cls in _all_errors()) or code == "internal_error"


def test_document_describes_models_and_auth(store_client: TestClient) -> None:
    """Request bodies are the vendor models; auth schemes are the configured ones."""
    document = store_client.get("/openapi.json").json()
    message = document["components"]["schemas"]["IotcommsMessage"]
    assert set(message["required"]) == {"from", "to", "contentType", "body", "replyId"}
    assert document["components"]["securitySchemes"] == {
        "basic": {"type": "http", "scheme": "basic"},
        "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    message_path = document["paths"]["/v1/callbacks/{source}/message"]
    assert message_path["parameters"][0]["schema"]["enum"] == ["customer47", "customer48"]
    body = message_path["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/IotcommsMessage"}
    assert "/v1/push/{source}/newCall" in document["paths"]


def _codes(response: dict[str, Any]) -> list[str]:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return list(schema.get("properties", {}).get("code", {}).get("enum", []))


def _all_errors(base: type[RequestError] = RequestError) -> Iterator[type[RequestError]]:
    for cls in base.__subclasses__():
        yield cls
        yield from _all_errors(cls)


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real receiver (embedded store) on 127.0.0.1."""
    directory = tmp_path_factory.mktemp("openapi")
    (directory / "pw").write_text(BASIC_PASSWORD)
    subprocess.run(
        [sys.executable, "-m", "receiver", "keygen", "--out", str(directory / "keys")], check=True, capture_output=True
    )
    config = directory / "receiver.yaml"
    config.write_text(
        f"""
server: {{max_body_bytes: 8192, log_level: warning}}
store: {{path: {directory / "events.db"}}}
sources:
  customer47:
    kind: iotcomms
    domain: {DOMAIN}
    auth:
      - {{type: jwt, public_keys: [{directory / "keys" / "public.pem"}]}}
      - {{type: basic, username: iotcomms, password_file: {directory / "pw"}}}
"""
    )
    with run_receiver(config) as receiver:
        yield receiver.url


BASIC = "Basic " + base64.b64encode(f"iotcomms:{BASIC_PASSWORD}".encode()).decode()


def test_api_conforms_to_its_document(live_url: str, tmp_path: Path) -> None:
    """Schemathesis fuzzes the live server: no 5xx, every answer matches its documented status and shape."""
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis), "run", f"{live_url}/openapi.json",
            "--checks", "all",
            "--max-examples", "25",
            "--seed", "20261124",
            "--workers", "1",
            "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: {BASIC}",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
