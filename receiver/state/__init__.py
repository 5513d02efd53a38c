"""Single-use ids, the dedup window, budgets and failure counts: in this process, or shared through Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from receiver.state.base import Once, State
from receiver.state.memory import MemoryState

if TYPE_CHECKING:
    from receiver.settings import StateSettings

__all__ = ["MemoryState", "Once", "State", "build_state"]


def build_state(
    settings: StateSettings,
    *,
    lease_seconds: float,
    on_fallback: Callable[[str], None] = lambda _concern: None,
) -> State:
    """The state the settings name; ``lease_seconds`` bounds how long a reserved id waits for its first copy."""
    if settings.url is None:
        return MemoryState()
    from receiver.state.redis import RedisState  # noqa: PLC0415 - the client loads only when it is used

    return RedisState(settings, password=settings.password(), lease_seconds=lease_seconds, on_fallback=on_fallback)
