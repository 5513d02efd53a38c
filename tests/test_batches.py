"""Batches with a price: ids hashed once, an item cap before validation, never a 503 for what can never fit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.events import MAX_RECORD_BYTES, Delivery
from receiver.normalize import EventIds, event_id
from receiver.settings import build_settings
from tests.support.publisher import MemoryPublisher
from tests.support.server import run_receiver

TOKEN = "batches-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SHA = hashlib.sha256(TOKEN.encode()).hexdigest()
PUBLISHER = MemoryPublisher()


def test_event_ids_are_those_of_before() -> None:
    """Ids made from one copied prefix digest are byte-identical to the ids hashed whole (pinned from main)."""
    body = b'[{"deviceId":"d","group":"g"}]'
    delivery = Delivery("trk", "push", body, "application/json", {}, "", 0.0)
    ids = EventIds(delivery)
    assert ids() == event_id(delivery) == "c441aae4-2b15-8659-ade4-825a9a10f5b1"
    assert [ids(0), ids(1)] == ["30fd85cb-0b74-8ea9-9ef7-00759374d9bf", "b4768ce8-f024-8fe4-bb44-7cccb734cf22"]
    assert EventIds(delivery, "imsi=1")(0) == "a1ae9932-0e20-83a9-94c4-8249ba36db1e"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    auth = [{"type": "bearer", "tokens": [{"sha256": SHA}]}]
    config = build_settings(
        {
            "audit": {"enabled": False},
            "kafka": {"max_pending_records": 100},
            "sources": {
                "trk": {"kind": "tracker", "auth": auth, "max_batch_items": 150},
                "io": {"kind": "iotcomms", "domain": "d.example", "auth": auth},
            },
        },
        environ=False,
    )
    with TestClient(create_app(config, publisher=PUBLISHER)) as test_client:
        yield test_client


def test_more_items_than_max_batch_items_is_413(client: TestClient) -> None:
    """40,001 `{}` items to iotcomms newCall are refused 413 batch_too_large at once (was: 7 s of loop, then 200)."""
    body = b"[" + b",".join([b"{}"] * 40_001) + b"]"
    started = time.perf_counter()
    answer = client.post("/v1/callbacks/io/newCall", content=body, headers=AUTH)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 413
    assert answer.json()["code"] == "batch_too_large"
    assert "1000" in answer.json()["message"]
    assert elapsed < 0.5, f"the refusal took {elapsed:.3f} s"


def test_batch_that_can_never_fit_the_pending_cap_is_413(client: TestClient) -> None:
    """A batch with more records than kafka.max_pending_records is 413, not a 503 the vendor retries forever."""
    body = json.dumps([{"deviceId": f"d{n}", "group": "g"} for n in range(101)]).encode()
    answer = client.post("/v1/push/trk", content=body, headers=AUTH)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "batch_too_large"
    fits = client.post("/v1/push/trk", content=body[: body.rindex(b", {")] + b"]", headers=AUTH)
    assert fits.status_code == 200, fits.text


def test_record_too_large_for_the_producer_is_413_and_dead_lettered_truncated(client: TestClient) -> None:
    """A near-limit body is 413 record_too_large (was: 503 "may be written"); its dead letter fits the producer."""
    body = json.dumps({"deviceId": "d", "group": "g", "pad": "é" * 523_800}, ensure_ascii=False).encode()
    assert len(body) <= 1_048_576
    answer = client.post("/v1/push/trk", content=body, headers=AUTH)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "record_too_large"
    letter = PUBLISHER.on("iot.deadletter")[-1]
    assert letter.size() <= MAX_RECORD_BYTES
    assert json.loads(letter.value)["body_truncated"] == len(body)


@pytest.mark.parametrize(
    ("body", "type_"),
    [
        pytest.param(b'{"deviceId": "d", "group": "g", "temperature": 1e999}', "json_invalid", id="1e999"),
        pytest.param(b'{"deviceId": "d", "group": "g", "temperature": -Infinity}', "json_invalid", id="infinity"),
        pytest.param(b'{"deviceId": "d", "group": "g", "temperature": NaN}', "json_invalid", id="nan"),
        pytest.param(b'{"deviceId": "\\ud800", "group": "g"}', "lone_surrogate", id="lone-high-surrogate"),
        pytest.param(b'{"deviceId": "d", "group": "g", "x": "\\udc00"}', "lone_surrogate", id="lone-low-surrogate"),
    ],
)
def test_what_json_text_cannot_carry_is_422(client: TestClient, body: bytes, type_: str) -> None:
    """Non-finite numbers and lone surrogate escapes are refused 422 at parse time (were: `Infinity` published, 500)."""
    answer = client.post("/v1/push/trk", content=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["type"] == type_


def test_a_surrogate_pair_is_text(client: TestClient) -> None:
    """A correctly paired surrogate escape (an emoji) is accepted."""
    answer = client.post("/v1/push/trk", content=b'{"deviceId": "\\ud83d\\ude00", "group": "g"}', headers=AUTH)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("charset", ["rot13", "base64", "zlib", "undefined", "punycode", "hex", "bz2"])
def test_only_text_encodings_are_charsets(client: TestClient, charset: str) -> None:
    """A charset that is no text encoding is 415 (or 422 when its bytes do not decode), never a 500."""
    answer = client.post("/v1/push/trk", content=b'{"deviceId": "d", "group": "g"}',
                         headers={**AUTH, "Content-Type": f"application/json; charset={charset}"})  # fmt: skip
    assert answer.status_code in (415, 422), answer.text
    assert answer.json()["code"] in ("unsupported_media_type", "invalid_payload")


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"""
store: {{path: {tmp_path / "events.db"}}}
audit: {{enabled: false}}
server: {{failure_limit_per_minute: 0}}
sources:
  trk: {{kind: tracker, auth: [{{type: bearer, tokens: [{{sha256: '{SHA}'}}]}}]}}
  io: {{kind: iotcomms, domain: d.example, auth: [{{type: bearer, tokens: [{{sha256: '{SHA}'}}]}}]}}
"""
    )
    return config


async def slowest_healthz_during(url: str, path: str, body: bytes) -> tuple[float, int]:
    """The slowest /healthz answer while one large batch is handled, and the batch's status."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        batch = asyncio.create_task(client.post(path, content=body, headers=AUTH))
        slowest = 0.0
        while not batch.done():
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.005)
        return slowest, (await batch).status_code


def worst_case_bodies() -> list[tuple[str, bytes, int]]:
    item = {"deviceId": "dev-1", "group": "g", "timestamp": 1700000000, "temperature": 21.5, "payload": "ab" * 450}
    return [
        ("/v1/push/trk", json.dumps([item] * 1000).encode(), 200),
        ("/v1/callbacks/io/newCall", b"[" + b",".join([b"{}"] * 40_001) + b"]", 413),
        ("/v1/push/trk", b"[" + b",".join([b"{}"] * 349_000) + b"]", 413),
    ]


def test_a_1_mib_batch_does_not_stall_the_loop(tmp_path: Path) -> None:
    """Worst-case batches within the 1 MiB body limit leave /healthz fast (were: 0.8 s, 4.7 s, seconds)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        for path, body, status in worst_case_bodies():
            assert len(body) <= 1_048_576
            slowest, got = asyncio.run(slowest_healthz_during(receiver.url, path, body))
            print(f"{path} {len(body)} B: {got}, slowest /healthz {slowest * 1000:.1f} ms")
            assert got == status
            assert slowest < 0.4, f"/healthz took {slowest:.3f} s during a {len(body)} B batch to {path}"


def test_a_repeated_query_key_keeps_its_first_value_as_a_form_does(tmp_path: Path) -> None:
    """`?device=AAA&device=BBB` is device AAA, as the same fields in a form are (was: the query's last won)."""
    config = build_settings(
        {
            "store": {"path": str(tmp_path / "events.db")},
            "audit": {"enabled": False},
            "sources": {"sfx": {"kind": "sigfox", "auth": [{"type": "bearer", "tokens": [{"sha256": SHA}]}]}},
        },
        environ=False,
    )
    publisher = MemoryPublisher()
    fields = "device=AAA&time=1700000000&data=01&device=BBB"
    with TestClient(create_app(config, publisher=publisher)) as client:
        by_query = client.get(f"/v1/push/sfx/uplink?{fields}", headers={"Authorization": f"Bearer {TOKEN}"})
        by_form = client.post("/v1/push/sfx/uplink", content=fields,
                              headers={"Authorization": f"Bearer {TOKEN}",
                                       "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (by_query.status_code, by_form.status_code) == (200, 200), (by_query.text, by_form.text)
    assert [json.loads(r.value)["subject"] for r in publisher.records] == ["AAA", "AAA"]
