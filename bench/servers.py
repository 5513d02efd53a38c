"""The servers under load: a process in its own session, its readiness, and the CPU of its process tree.

``uvicorn --workers 2`` is a supervisor with worker children, so a server's CPU is the sum
over the live process tree. A child's CPU reaches its parent's ``cutime`` only once the
child has exited, so the children are read one by one from ``/proc`` instead.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not run; the message says which step failed and why."""


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (state onward): the command name may hold spaces and parentheses."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone since the listing
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU used so far by ``root`` and its live descendants (their own, not ``cutime``)."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class Server:
    """A uvicorn process in its own session, so Ctrl-C reaches only us and we stop it in order."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            msg = f"{self.name} was never started"
            raise BenchError(msg)
        return self.process.pid

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
            )

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            msg = f"{self.name} exited with status {self.process.returncode}; its log ends:\n{self.tail()}"
            raise BenchError(msg)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM lets uvicorn run the lifespan shutdown (the producers flush); its workers follow it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the whole session: workers too
            self.process.wait()


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection; the standard library keeps this independent of the apps."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(server: Server, port: int, *, method: str, path: str, body: bytes | None, timeout: float) -> None:
    """Poll until ``method path`` answers 200: the receiver's /readyz needs a connected producer."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            status, answer = http_call(port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"{status} {answer.decode(errors='replace')[:300]}"
        time.sleep(0.25)
    msg = f"{server.name} was not ready within {timeout:.0f}s ({method} {path}: {last}); log:\n{server.tail()}"
    raise BenchError(msg)
