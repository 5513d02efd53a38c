"""The HTTP surface on the embedded store: routes, methods, errors and readiness."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.conftest import BASIC_PASSWORD, SettingsFactory, message_body

URL = "/v1/callbacks/customer47/message"
AUTH = ("iotcomms", BASIC_PASSWORD)


def stored(path: Path) -> list[tuple[str, dict[str, object]]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT topic, value FROM events WHERE topic NOT LIKE '%.audit' ORDER BY seq")
        return [(t, json.loads(v)) for t, v in rows]


def test_callback_is_stored_durably(store_client: TestClient, tmp_path: Path) -> None:
    """Without Kafka, an accepted callback is committed to the SQLite store before the 200."""
    response = store_client.post(URL, json=message_body(), auth=AUTH)
    assert response.status_code == 200
    ((topic, event),) = stored(tmp_path / "events.db")
    assert topic == "iot.iotcomms.message"
    assert event["id"] == response.json()["id"]
    assert event["data"] == message_body()


def test_store_uses_wal(store_client: TestClient, tmp_path: Path) -> None:
    """The store runs in WAL mode, so readers never block the writer."""
    store_client.post(URL, json=message_body(), auth=AUTH)
    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        pytest.param(URL, "OPTIONS, POST", id="callback"),
        pytest.param("/v1/push/customer47", "OPTIONS, POST", id="push-of-a-vendor-that-posts"),
        pytest.param("/healthz", "GET, HEAD, OPTIONS", id="healthz"),
    ],
)
def test_options_answers_allow(store_client: TestClient, path: str, allow: str) -> None:
    """OPTIONS on every path answers 200 with the methods it serves."""
    response = store_client.options(path)
    assert response.status_code == 200
    assert response.headers["Allow"] == allow


def test_wrong_method_is_405_with_allow(store_client: TestClient) -> None:
    """A GET on a callback URL is 405 method_not_allowed, naming the allowed methods."""
    response = store_client.get(URL)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_json_404(store_client: TestClient) -> None:
    """Paths outside the API get the same error shape."""
    response = store_client.post("/v2/whatever")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_health_and_readiness(store_client: TestClient) -> None:
    """Liveness is plain; readiness names each check."""
    assert store_client.get("/healthz").json() == {"status": "ok"}
    ready = store_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"config": "ok", "shutdown": "ok", "store": "ok", "state": "ok"}


def test_push_family_uses_the_same_pipeline(store_client: TestClient) -> None:
    """``/v1/push/{source}`` reaches the same source, auth and error model."""
    response = store_client.post("/v1/push/customer47", json={"a": 1})
    assert response.status_code == 401
    assert response.json()["code"] == "auth_required"
    response = store_client.post("/v1/push/customer47", json={"a": 1}, auth=AUTH)
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_event"


def test_error_bodies_never_hold_the_secret(store_client: TestClient, make_settings: SettingsFactory) -> None:
    """Refusals of bad credentials do not echo the credentials they were given."""
    del make_settings
    for auth in [("iotcomms", BASIC_PASSWORD + "x"), ("x" + BASIC_PASSWORD, BASIC_PASSWORD)]:
        response = store_client.post(URL, json=message_body(), auth=auth)
        assert response.status_code == 401
        assert BASIC_PASSWORD not in response.text


def test_oversized_body_without_content_length(store_client: TestClient) -> None:
    """A chunked body past the limit is cut off with 413, not read to the end."""

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    response = store_client.post(URL, content=chunks(), auth=AUTH, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_bad_config_fails_at_creation(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """An unreadable password file stops ``create_app`` with the config path in the message."""
    settings = make_settings(
        sources={
            "s1": {
                "kind": "iotcomms",
                "domain": "d.example",
                "auth": [{"type": "basic", "username": "u", "password_file": str(tmp_path / "none")}],
            }
        }
    )
    with pytest.raises(Exception, match=r"sources\.s1\.auth\.0\.password_file: cannot read secret file"):
        create_app(settings)


def test_rfc3339_matches_datetime() -> None:
    """The cached timestamp formatter agrees with datetime to the millisecond, rounding included."""
    import random  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    from receiver.normalize import rfc3339  # noqa: PLC0415

    rng = random.Random(7)
    samples = [rng.uniform(0, 4e9) for _ in range(2000)] + [1700000000.9999996, 1700000000.0, 223877870.2649995]
    for seconds in samples:
        expected = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert rfc3339(seconds) == expected


def test_get_on_push_only_for_vendors_that_send_queries(store_client: TestClient) -> None:
    """A GET query string is a Sigfox-style delivery; a source whose vendor posts answers 405."""
    response = store_client.get("/v1/push/customer47/message?a=1", auth=AUTH)
    assert response.status_code == 405
    assert response.headers["Allow"] == "OPTIONS, POST"
