"""Per-device sequence tracking: gaps, repeats and resets of a vendor's message counter.

Where a vendor numbers messages (Sigfox ``seqNumber``, tracker frame counters), each
event is marked with what its number says about the device's stream, instead of the
anomaly passing silently. Memory is bounded: the least recently seen devices are
forgotten first (their next message then counts as ``first``).
"""

from __future__ import annotations

from collections import OrderedDict

FIRST, OK, GAP, REPEAT, RESET = "first", "ok", "gap", "repeat", "reset"
_REPEAT_WINDOW = 16  # a lower number this close to the last one is a late or repeated message


class SequenceTracker:
    def __init__(self, max_devices: int = 100_000) -> None:
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._max = max_devices

    def observe(self, source: str, device: str, sequence: int) -> tuple[str, int]:
        """``(status, missed)``: ``missed`` counts the numbers skipped by a gap."""
        key = (source, device)
        last = self._last.get(key)
        if last is None:
            status, missed = FIRST, 0
        elif sequence == last + 1:
            status, missed = OK, 0
        elif sequence > last + 1:
            status, missed = GAP, sequence - last - 1
        elif last - sequence < _REPEAT_WINDOW:
            status, missed = REPEAT, 0
        else:
            status, missed = RESET, 0
        if status != REPEAT:
            self._last[key] = sequence
            self._last.move_to_end(key)
            if len(self._last) > self._max:
                self._last.popitem(last=False)
        return status, missed
