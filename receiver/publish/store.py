"""The embedded event store: a durable SQLite file (WAL) used when no Kafka is configured.

Requests never touch SQLite on the event loop. They queue their records and await a
future; one writer task takes everything queued, commits it in one transaction on a
worker thread (``synchronous=FULL``: a commit is on disk), then resolves the futures.
Under load this is group commit: one fsync serves many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from receiver.errors import ConfigError, StoreUnavailableError
from receiver.events import Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    topic     TEXT    NOT NULL,
    key       BLOB    NOT NULL,
    value     BLOB    NOT NULL,
    headers   TEXT    NOT NULL,
    stored_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_topic ON events (topic, seq);
"""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the store file; the writer creates it and its schema."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str]]


def read_events(conn: sqlite3.Connection, after: int = 0, topic: str | None = None) -> Iterator[StoredEvent]:
    """Events with ``seq > after``, oldest first, optionally of one topic."""
    query = "SELECT seq, topic, key, value, headers FROM events WHERE seq > ?"
    params: list[object] = [after]
    if topic is not None:
        query += " AND topic = ?"
        params.append(topic)
    for seq, topic_, key, value, headers in conn.execute(query + " ORDER BY seq", params):
        yield StoredEvent(seq, topic_, bytes(key), bytes(value), [tuple(h) for h in json.loads(headers)])


def last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
    return int(row[0])


_Pending = tuple[Sequence[Record], asyncio.Future[None]]


class StorePublisher:
    name = "store"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # Events held in the store, for the store-depth metric. The store is append-only,
        # so its last sequence number is its depth, also when several workers write it.
        self.depth = 0
        self.on_change: Callable[[], None] | None = None  # told when ``depth`` changes

    async def __aenter__(self) -> Self:
        try:
            self._conn = await asyncio.to_thread(connect, self._path)
            self.depth = await asyncio.to_thread(last_seq, self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError([f"store.path: cannot open {self._path}: {exc}"]) from exc
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Let queued writes finish before the connection closes.
        await self._queue.join()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._conn is not None:
            self._conn.close()

    async def publish(self, records: Sequence[Record]) -> None:
        if self._writer is None or self._writer.done():
            raise StoreUnavailableError("the event store is not open; retry shortly")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((records, done))
        await done

    async def check(self) -> str | None:
        if self._writer is None or self._writer.done():
            return "event store writer is not running"
        return None

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [r for records, _ in batch for r in records]
            try:
                self.depth = await asyncio.to_thread(self._write, rows)
            except sqlite3.Error as exc:
                error = StoreUnavailableError(f"the event store could not write the event ({exc}); retry later")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                    self._queue.task_done()
                continue
            if self.on_change is not None:
                self.on_change()
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
                self._queue.task_done()

    def _write(self, records: list[Record]) -> int:
        """Commit ``records`` in one transaction; return the store's last sequence number after them."""
        if self._conn is None:  # only written to between __aenter__ and __aexit__
            msg = "the event store is not open"
            raise StoreUnavailableError(msg)
        now = time.time()
        rows = [(r.topic, r.key, r.value, json.dumps([(k, v.decode()) for k, v in r.headers]), now) for r in records]
        with self._conn:  # one transaction, committed (and fsynced) on exit
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO events (topic, key, value, headers, stored_at) VALUES (?, ?, ?, ?, ?)", rows
            )
            return last_seq(self._conn)  # other workers' rows included: the write lock is held
