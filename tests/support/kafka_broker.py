"""Fetch, start and stop a real single-node Apache Kafka broker (KRaft) on 127.0.0.1.

Tests and benchmarks need the real broker, not a stand-in: this module gets the
broker's jars from Maven Central with ``mvn dependency:copy-dependencies`` into a
git-ignored cache, formats KRaft storage in a fresh directory and runs
``kafka.Kafka`` on that classpath. Java and Maven are installed with apt when
missing. Standard library only, so it runs before the project's venv exists:
``scripts/kafka_broker.py`` runs this file as the command line.

    python scripts/kafka_broker.py fetch
    python scripts/kafka_broker.py run --port 9092      # foreground, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "3.9.1"  # KRaft GA, and every protocol version aiokafka 0.14 speaks
SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RECEIVER_KAFKA_CACHE", ROOT / ".cache" / "kafka")) / KAFKA_VERSION

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.receiver</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>{0}</groupId><artifactId>{1}</artifactId><version>{2}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


def _ensure_tools() -> None:
    """Install Java and Maven with apt when either is missing (CI machines start bare)."""
    missing = [name for name in ("java", "mvn") if shutil.which(name) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        msg = f"{', '.join(missing)} not found and apt-get is unavailable: install a JDK 17 and Maven"
        raise BrokerError(msg)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-q", "openjdk-17-jre-headless", "maven"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def fetch() -> Path:
    """Download the broker's runtime classpath once; later calls reuse the cache."""
    lib = CACHE / "lib"
    marker = CACHE / ".complete"
    if marker.exists():
        return lib
    _ensure_tools()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "pom.xml").write_text(_POM.format(*SLF4J_BINDING, version=KAFKA_VERSION))
    (CACHE / "log4j.properties").write_text(_LOG4J)
    cmd = [
        "mvn", "-q", "-B", "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=CACHE, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"mvn could not fetch kafka_2.13:{KAFKA_VERSION}:\n{result.stdout}{result.stderr}"
        raise BrokerError(msg)
    marker.touch()
    return lib


def free_port() -> int:
    """Pick a port on 127.0.0.1 that nothing listens on, held back from other callers for a minute.

    A port merely found free can be handed to the next ``bind(("127.0.0.1", 0))`` before our
    server binds it. So one connection is made to it and closed from the listening side first:
    that end stays in TIME_WAIT, the kernel gives the port to no ``bind`` to port 0, and a
    server that sets ``SO_REUSEADDR`` (uvicorn, the JVM) can still bind it.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address) as client:
            accepted, _ = listener.accept()
            accepted.close()  # first, so that the TIME_WAIT is on (127.0.0.1, port)
            client.recv(1)  # the FIN: the close has gone through before the port is handed out
        return int(address[1])


def _is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    """One KRaft broker+controller process with its own data directory."""

    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kafka-")))
    heap: str = "512m"
    process: subprocess.Popen[bytes] | None = None
    advertised_port: int | None = None  # clients are sent here instead (a proxy in front of the broker)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.advertised_port or self.port}"

    def _properties(self) -> str:
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.advertised_port or self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.workdir / 'data'}",
            "num.partitions=3",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "min.insync.replicas=1",
            "",
        ])  # fmt: skip

    def start(self, timeout: float = 120.0) -> Broker:
        """Format storage (first start only) and start; return once the broker serves."""
        lib = fetch()
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = self.workdir / "server.properties"
        props.write_text(self._properties())
        java = [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{CACHE / 'log4j.properties'}",
            "-cp", f"{lib}/*",
        ]  # fmt: skip
        if not (self.workdir / "data" / "meta.properties").exists():
            # `--cluster-id=<id>`: an id may start with "-", which argparse would take for an option.
            fmt = [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "-c", str(props)]
            result = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                msg = f"kafka storage format failed:\n{result.stdout}{result.stderr}"
                raise BrokerError(msg)
        with (self.workdir / "broker.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_serving(timeout)
        return self

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.workdir / "broker.log").read_text(errors="replace")[-4000:]
                msg = f"kafka broker exited with {self.process.returncode}:\n{tail}"
                raise BrokerError(msg)
            if _is_listening(self.port):
                return
            time.sleep(0.2)
        self.stop()
        msg = f"kafka broker did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s"
        raise BrokerError(msg)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly with SIGTERM; kill when it does not exit in time. Data is kept."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # The port is only free once the JVM is gone; give the kernel a moment.
        deadline = time.monotonic() + 5
        while _is_listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache")
    run = sub.add_parser("run", help="run a broker in the foreground until interrupted")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--controller-port", type=int, default=9093)
    run.add_argument("--data", type=Path, default=ROOT / ".data" / "kafka")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch())
        return 0
    broker = Broker(port=args.port, controller_port=args.controller_port, workdir=args.data)
    # The JVM runs in its own session: stop it on SIGTERM too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, interrupt)
    broker.start()
    print(f"kafka {KAFKA_VERSION} serving on {broker.bootstrap_servers} (data in {args.data})", flush=True)
    run_in_foreground(broker.process, broker.stop)
    return 0


def run_in_foreground(process: subprocess.Popen[bytes] | None, stop: Callable[[], None]) -> None:
    """Wait while ``process`` runs, until Ctrl-C (or SIGTERM, see ``interrupt``); ``stop`` it in any case."""
    try:
        while process is not None and process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM (a supervisor forwarding it too) must not cut the stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop()


if __name__ == "__main__":
    sys.exit(main())
