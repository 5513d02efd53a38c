"""How many worker processes ``receiver serve`` runs: ``server.workers`` (or ``--workers``), resolved once.

``auto`` means the CPUs this process may use: the CPUs it may be scheduled on, capped by
its cgroup's CPU quota rounded up (a container's CPU limit). But the security state
(replay reservations, the dedup window, request budgets, failed-authentication limits)
lives in each process unless ``state.url`` shares it through Redis: with N workers
keeping their own, a replayed request would be accepted once per worker and every
budget would be N times larger. So ``auto`` is one worker while the state is in
process, and a number given explicitly is honoured with a warning.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from receiver.settings import MAX_WORKERS, Settings

log = logging.getLogger("receiver")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in CPUs (cgroup v2 ``cpu.max``, else v1 CFS files); ``None`` when unlimited.

    A file that is missing, unreadable or malformed means no quota: a wrong guess here
    must never stop the receiver from starting.
    """
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    v1_quota = _read(root / "cpu" / "cpu.cfs_quota_us")
    v1_period = _read(root / "cpu" / "cpu.cfs_period_us")
    if v1_quota is None or v1_period is None:
        return None
    return _ratio(v1_quota, v1_period)


def available_cpus(root: Path = CGROUP_ROOT, *, schedulable: int | None = None) -> int:
    """The CPUs this process can keep busy: schedulable ones, capped by the cgroup quota rounded up; at least 1.

    ``schedulable`` replaces the CPU affinity count (tests pass one).
    """
    if schedulable is None:
        schedulable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = schedulable
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


@dataclass(frozen=True, slots=True)
class Workers:
    """The resolved count and what decided it, for the one log line the serve command writes."""

    count: int
    requested: int | str  # the flag's or the setting's value, "auto" included
    cpus: int
    state_shared: bool

    def announce(self) -> None:
        """Log why the count is what it is, when that is worth knowing (several CPUs, in-process state)."""
        if self.state_shared:
            return
        if self.requested == "auto" and self.cpus > 1:
            log.info(
                "receiver.workers_limited",
                extra={
                    "workers": self.count,
                    "cpus": self.cpus,
                    "reason": "state is in process; set state.url to share it through Redis and use every CPU",
                },
            )
        elif self.count > 1:
            log.warning(
                "receiver.workers_state_per_worker",
                extra={
                    "workers": self.count,
                    "reason": "state is in process: replay protection, dedup and budgets are per worker; "
                    "set state.url to share them",
                },
            )


def resolve_workers(
    settings: Settings, flag: int | None = None, *, root: Path = CGROUP_ROOT, schedulable: int | None = None
) -> Workers:
    """The worker count: ``flag`` (``--workers``) over ``server.workers``; ``auto`` as the module says.

    ``root`` and ``schedulable`` replace the cgroup files and the CPU affinity (tests pass them).
    """
    requested: int | str = flag if flag is not None else settings.server.workers
    cpus = available_cpus(root, schedulable=schedulable)
    shared = settings.state.shared
    if isinstance(requested, int):
        count = requested
    elif shared:
        count = min(cpus, MAX_WORKERS)
    else:
        count = 1
    return Workers(count, requested, cpus, shared)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max" (v2) or garbage: no quota
    if q <= 0 or p <= 0:
        return None  # -1 (v1): no quota
    return q / p
