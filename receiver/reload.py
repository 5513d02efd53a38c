"""Rotation without restart: SIGHUP (and an optional file watch) reloads sources, keys and secrets.

A reload builds the new sources completely (keys parsed, secrets read) on a worker
thread, then swaps them in with one assignment, so requests in flight finish with the
sources they started with. A broken file keeps the old sources and logs why. Server,
Kafka and store settings are not reloaded: they need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from receiver.errors import ConfigError
from receiver.settings import Settings
from receiver.sources import Source, build_sources

log = logging.getLogger("receiver.reload")


def watched_files(settings: Settings, config: Path | None) -> list[Path]:
    """Every key and secret file the sources name, and the config file itself."""
    found: list[Path] = [config] if config is not None else []

    def walk(value: Any) -> Iterator[Path]:
        if isinstance(value, Path):
            yield value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                yield from walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                yield from walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)

    found.extend(walk(list(settings.sources.values())))
    return found


def _stamp(paths: list[Path]) -> tuple[tuple[str, float], ...]:
    stamps = []
    for path in paths:
        try:
            stamps.append((str(path), path.stat().st_mtime))
        except OSError:
            stamps.append((str(path), -1.0))
    return tuple(stamps)


class Reloader:
    def __init__(
        self,
        load: Callable[[], Settings],
        apply: Callable[[Mapping[str, Source]], None],
        files: list[Path],
    ) -> None:
        self._load = load
        self._apply = apply
        self._files = files
        self._stamps = _stamp(files)
        self._lock = asyncio.Lock()
        self.reloads = 0

    async def reload(self) -> bool:
        """Load and swap in new sources; keep the old ones (and say why) when that fails."""
        async with self._lock:
            try:
                settings, sources = await asyncio.to_thread(self._build)
            except ConfigError as exc:
                log.error("receiver.reload_refused", extra={"problems": exc.problems})  # noqa: TRY400 - no traceback needed
                return False
            self._apply(sources)
            self._files = watched_files(settings, self._files[0] if self._files else None)
            self._stamps = _stamp(self._files)
            self.reloads += 1
            log.info("receiver.reloaded", extra={"sources": len(sources)})
            return True

    def _build(self) -> tuple[Settings, Mapping[str, Source]]:
        settings = self._load()
        return settings, build_sources(settings)

    async def watch(self, interval: float) -> None:
        """Reload whenever a watched file's modification time changes."""
        while True:
            await asyncio.sleep(interval)
            if _stamp(self._files) != self._stamps:
                await self.reload()

    @contextlib.asynccontextmanager
    async def running(self, interval: float) -> Any:
        """SIGHUP reloads while active (main thread only); ``interval`` > 0 also watches the files."""
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[Any]] = set()
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            loop.add_signal_handler(signal.SIGHUP, lambda: tasks.add(loop.create_task(self.reload())))
        watcher = loop.create_task(self.watch(interval)) if interval > 0 else None
        try:
            yield self
        finally:
            if on_main:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in [*tasks, *([watcher] if watcher else [])]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
