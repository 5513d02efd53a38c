"""One pipeline: dead-letter re-drive and ``routes test`` use what the app uses, on the embedded store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.cli import main
from receiver.publish.store import connect, read_events
from receiver.settings import build_settings

TOKEN = "redrive-token-0123456789abcdef"
ADMIN = "redrive-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(tmp_path: Path, *, maximum: int, **gen: Any) -> dict[str, Any]:
    """A store-backed config whose generic source refuses a ``temp`` above ``maximum``."""
    schema = tmp_path / f"schema-{maximum}.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"temp": {"type": "number", "maximum": maximum}}}))
    auth = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    return {
        "store": {"path": str(tmp_path / "events.db")},
        "audit": {"enabled": False},
        "dry_run": {"enabled": True, "token_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
        "routes": [
            {
                "match": {"kind": "generic", "subject": "hot-*"},
                "topics": ["hot"],
                "key": "source",
                "headers": {"x-route": "hot"},
            }
        ],
        "sources": {"gen": {"kind": "generic", "auth": auth, "generic": {"schema_file": str(schema)}, **gen}},
    }


def stored(tmp_path: Path, topic: str) -> list[dict[str, Any]]:
    conn = connect(tmp_path / "events.db", readonly=True)
    try:
        return [json.loads(e.value) for e in read_events(conn, 0, topic)]
    finally:
        conn.close()


def refuse_twice(tmp_path: Path) -> None:
    """The same reading posted twice while the schema is too strict: two dead letters, one event id."""
    with TestClient(create_app(build_settings(config(tmp_path, maximum=10), environ=False))) as client:
        for _ in range(2):
            answer = client.post("/v1/push/gen/message", json={"deviceId": "hot-1", "temp": 20}, headers=AUTH)
            assert answer.status_code == 422
    assert len(stored(tmp_path, "iot.deadletter")) == 2


def test_redrive_shares_the_dedup_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Re-driven letters of one delivery publish its event once when the source deduplicates (was: twice)."""
    refuse_twice(tmp_path)
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(config(tmp_path, maximum=100, dedup_window_seconds=600)))
    assert main(["deadletter", "replay", "--config", str(fixed)]) == 0
    assert "2 replayed, 0 still refused" in capsys.readouterr().out
    (event,) = stored(tmp_path, "hot")
    assert event["subject"] == "hot-1"


def test_redrive_authorizes_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A letter whose sender lacks a role the source now requires stays refused (was: published)."""
    refuse_twice(tmp_path)
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(config(tmp_path, maximum=100, require_roles=["ROLE_DEVICE_WRITE"])))
    assert main(["deadletter", "replay", "--config", str(fixed)]) == 1
    assert "still refused" in capsys.readouterr().err
    assert stored(tmp_path, "hot") == []


def test_routes_test_agrees_with_the_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``routes test`` on a generic source's event prints the records the pipeline would publish (was: KeyError)."""
    settings = config(tmp_path, maximum=100)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings))
    for subject, expected_rule in (("hot-1", 0), ("cold-1", "default")):
        with TestClient(create_app(build_settings(settings, environ=False))) as client:
            report = client.post(
                "/v1/dry-run/gen/message",
                json={"deviceId": subject, "temp": 20},
                headers={**AUTH, "X-Dry-Run-Token": ADMIN},
            ).json()
        (event,) = report["events"]
        event_file = tmp_path / "event.json"
        event_file.write_text(json.dumps(event))
        capsys.readouterr()
        assert main(["routes", "test", str(path), str(event_file)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["rule"] == expected_rule
        assert printed["topics"] == [r["topic"] for r in report["records"]]
        assert {printed["key"]} == {r["key"] for r in report["records"]}
        route_headers = {
            k: v for k, v in report["records"][0]["headers"].items() if not k.startswith(("ce_", "content"))
        }
        assert printed["headers"] == route_headers
