"""A real Redis for tests and the bench: Debian's ``redis-server``, one process on 127.0.0.1.

``ensure()`` installs the package with apt when the binary is missing (CI machines start
bare), as the Kafka broker's script does for Java. A ``RedisServer`` runs without
persistence on a free port and can be killed and started again on the same port, for
outage tests. Standard library only, so ``scripts/redis_server.py`` runs before the venv.

    python scripts/redis_server.py ensure
    python scripts/redis_server.py run --port 6379      # foreground, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.kafka_broker import free_port, interrupt, run_in_foreground

BINARY = "redis-server"


class RedisServerError(RuntimeError):
    """Redis could not be installed or started."""


def ensure() -> str:
    """The ``redis-server`` binary, installed with apt first when it is missing."""
    found = shutil.which(BINARY)
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        msg = "redis-server not found and apt-get is unavailable: install Redis 7 (or Valkey)"
        raise RedisServerError(msg)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "redis-server"], check=True, env=env)
    found = shutil.which(BINARY)
    if found is None:
        msg = "apt installed redis-server, but the binary is not on PATH"
        raise RedisServerError(msg)
    return found


def ping(port: int, timeout: float = 0.5, *, ca: Path | None = None) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING (or asks for a password: it is up); TLS with ``ca``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
            if ca is None:
                return _pinged(plain)
            context = ssl.create_default_context(cafile=str(ca))
            with context.wrap_socket(plain, server_hostname="127.0.0.1") as secure:
                return _pinged(secure)
    except OSError:
        return False


def _pinged(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))


@dataclass
class RedisServer:
    """One ``redis-server`` process with no persistence, listening on 127.0.0.1 only."""

    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-")))
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None  # --requirepass: clients must AUTH
    tls: Path | None = None  # a directory with cert.pem, key.pem and ca.pem: TLS only, on ``port``

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        binary = ensure()
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = [
                "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                "--tls-cert-file", str(self.tls / "cert.pem"), "--tls-key-file", str(self.tls / "key.pem"),
                "--tls-ca-cert-file", str(self.tls / "ca.pem"),
            ]  # fmt: skip
        argv = [
            binary, "--bind", "127.0.0.1", *ports, "--dir", str(self.workdir),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning",
            "--maxmemory", "256mb", "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        with (self.workdir / "redis.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"redis-server exited with {self.process.returncode}; see {self.workdir / 'redis.log'}"
                raise RedisServerError(msg)
            if ping(self.port, ca=None if self.tls is None else self.tls / "ca.pem"):
                return self
            time.sleep(0.05)
        self.stop()
        msg = f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout:.0f} s"
        raise RedisServerError(msg)

    def kill(self) -> None:
        """SIGKILL: Redis vanishes at once, as in a crash (nothing kept: no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as in a hung server."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="install redis-server with apt if it is missing")
    run = sub.add_parser("run", help="run Redis in the foreground until interrupted")
    run.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    if args.command == "ensure":
        print(ensure())
        return 0
    server = RedisServer(port=args.port)
    signal.signal(signal.SIGTERM, interrupt)
    server.start()
    print(f"redis serving on {server.url}", flush=True)
    run_in_foreground(server.process, server.cleanup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
