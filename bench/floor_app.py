"""The benchmark's Python floor: raw ASGI plus one aiokafka ``acks=all`` send per request.

What no Python receiver that waits for Kafka's acknowledgement can do without: read the
body, hand one record to an idempotent producer (``acks=all``, ``linger_ms=0``, as the
receiver's), await its acknowledgement, answer. The receiver's CPU per request over
this one's is what its own work (JWT, validation, CloudEvent, audit, metrics) costs.

    BENCH_FLOOR_BOOTSTRAP=127.0.0.1:9092 python -m uvicorn floor_app:app --app-dir bench --port 8000
"""

from __future__ import annotations

import os

from aiokafka import AIOKafkaProducer
from hello_app import Receive, Scope, Send, answer, read_body

BOOTSTRAP_VARIABLE = "BENCH_FLOOR_BOOTSTRAP"
TOPIC_VARIABLE = "BENCH_FLOOR_TOPIC"
DEFAULT_TOPIC = "bench-floor.records"


async def _lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """The producer lives in the lifespan state, which uvicorn copies into every request's scope."""
    await receive()  # lifespan.startup
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ[BOOTSTRAP_VARIABLE],
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        client_id="bench-floor",
    )
    try:
        await producer.start()
    except Exception as exc:
        await send({"type": "lifespan.startup.failed", "message": f"kafka producer did not start: {exc}"})
        return
    scope["state"]["producer"] = producer
    scope["state"]["topic"] = os.environ.get(TOPIC_VARIABLE, DEFAULT_TOPIC)
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await producer.stop()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] == "http":
        body = await read_body(receive)
        state = scope["state"]
        metadata = await state["producer"].send_and_wait(state["topic"], body)
        await answer(send, b'{"ok":true,"partition":%d,"offset":%d}' % (metadata.partition, metadata.offset))
