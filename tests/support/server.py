"""``run_receiver``: a real ``receiver serve`` process, for tests that need signals or a socket."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from tests.support.kafka_broker import free_port
from tests.support.ready import wait_ready

_PORT_TAKEN = "address already in use"  # uvicorn's log line when the bind fails


@dataclass(frozen=True)
class Receiver:
    """A running receiver process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path  # its stdout and stderr

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class _PortTakenError(Exception):
    """Another process bound the port first; pick another."""


@contextmanager
def run_receiver(
    config: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    ready_timeout: float = 60.0,
    stop_timeout: float = 30.0,
) -> Iterator[Receiver]:
    """Run ``receiver serve --config CONFIG [ARGS]`` on a free port until the block ends; yield it once ready.

    The child gets the test's environment without any ``RECEIVER_*`` variable, so the
    config file alone decides, plus ``env``. Its output goes to ``log`` (default: ``receiver.log``
    beside the config). On leaving, a process still running gets SIGTERM (uvicorn's
    graceful shutdown), and is killed if it has not exited within ``stop_timeout``.
    """
    log = log or config.parent / "receiver.log"
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("RECEIVER_")}
    child_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    # free_port holds the port back from other tests, but not from a process that binds
    # that very number: should one win the race, start over on another port.
    for attempt in range(3):
        receiver = _start(config, args, log, child_env)
        try:
            _wait_started(receiver, ready_timeout, is_last=attempt == 2)
        except _PortTakenError:
            _stop(receiver.process, stop_timeout)
            continue
        except BaseException:
            _stop(receiver.process, stop_timeout)
            raise
        try:
            yield receiver
        finally:
            _stop(receiver.process, stop_timeout)
        return


def _start(config: Path, args: Sequence[str], log: Path, env: dict[str, str]) -> Receiver:
    port = free_port()
    argv = [sys.executable, "-m", "receiver", "serve", "--config", str(config), "--host", "127.0.0.1", *args]
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen([*argv, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    return Receiver(process, port, log)


def _wait_started(receiver: Receiver, timeout: float, *, is_last: bool) -> None:
    def gone() -> str | None:
        if receiver.process.poll() is None:
            return None
        output = receiver.output()
        if _PORT_TAKEN in output.lower() and not is_last:
            raise _PortTakenError
        return f"exit status {receiver.process.returncode}; its log ends:\n{output[-4000:]}"

    with httpx.Client(base_url=receiver.url, timeout=2) as client:
        wait_ready(client, timeout=timeout, gone=gone)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
