"""Dead letters: an authenticated delivery that was refused is kept, so it can be replayed.

The record carries the raw body (base64 when it is not UTF-8), its content type, the
source, the callback name and why it was refused. Credentials are never part of it.
"""

from __future__ import annotations

import base64
import json

from receiver.errors import InvalidPayloadError, RequestError
from receiver.events import Delivery, Record
from receiver.normalize import event_id, rfc3339


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


def deadletter_record(delivery: Delivery, error: RequestError, prefix: str) -> Record:
    try:
        body, encoding = delivery.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(delivery.body).decode(), "base64"
    letter = {
        "id": event_id(delivery),
        "source_id": delivery.source_id,
        "event": delivery.event,
        "received_at": rfc3339(delivery.received_at),
        "code": error.code,
        "message": error.message,
        "errors": error.errors if isinstance(error, InvalidPayloadError) else [],
        "content_type": delivery.content_type,
        "body_encoding": encoding,
        "body": body,
    }
    return Record(
        topic=deadletter_topic(prefix),
        key=delivery.source_id.encode(),
        value=json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode(),
        headers=[("content-type", b"application/json"), ("error_code", error.code.encode())],
    )
