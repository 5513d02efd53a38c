"""A py-spy profile of a server's process tree during one measured run, and its top functions.

py-spy samples the live processes from outside (ptrace; we run as root), so the server
runs unchanged. It writes a speedscope file (open it at speedscope.app or with
``npx speedscope``); the summary here counts, per function, the samples in which it was
the innermost frame: where the CPU went, not who called it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from servers import BenchError

ROOT = Path(__file__).resolve().parent.parent
RATE = 250  # samples a second: fine-grained enough for a 10 s run, light enough for py-spy itself

_STDLIB = re.compile(r"/lib/python3\.\d+/(.+)$")


def executable() -> str:
    """py-spy from the venv (the dev group installs it), else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy is not installed: run `uv sync` (it is in the dev group)")
    return found


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` and its children for ``seconds``; the caller runs the load meanwhile."""
    argv = [
        executable(), "record", "--pid", str(pid), "--subprocesses", "--duration", str(max(1, round(seconds))),
        "--rate", str(RATE), "--format", "speedscope", "--output", str(out),
    ]  # fmt: skip
    with out.with_suffix(".log").open("wb") as log:  # py-spy keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], out: Path, timeout: float) -> None:
    """Wait for py-spy to write its file; stop it when it overstays."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if not out.exists():
        log = out.with_suffix(".log")
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        msg = f"py-spy wrote no profile (exit {process.returncode}):\n{text}"
        raise BenchError(msg)


def _short(path: str) -> str:
    """A frame's file as a reader knows it: the package path, or the standard library's."""
    if "site-packages/" in path:
        return path.rpartition("site-packages/")[2]
    stdlib = _STDLIB.search(path)
    if stdlib is not None:
        return stdlib.group(1)
    return path.removeprefix(f"{ROOT}/")


def top_functions(speedscope: Path, count: int = 15) -> tuple[int, list[tuple[str, int]]]:
    """(all samples, the ``count`` functions with most own samples) over every sampled thread."""
    document: dict[str, Any] = json.loads(speedscope.read_text())
    frames = document["shared"]["frames"]
    own: Counter[str] = Counter()
    for profile in document["profiles"]:
        # Each weight is one sample's share of time (1 / rate, in seconds); the stacks run from
        # the root to the innermost frame, and py-spy leaves out the samples of idle threads.
        for stack, weight in zip(profile.get("samples", []), profile.get("weights", []), strict=False):
            if stack:
                frame = frames[stack[-1]]
                own[f"{frame['name']} ({_short(frame.get('file', '?'))})"] += round(float(weight) * RATE)
    return sum(own.values()), own.most_common(count)
