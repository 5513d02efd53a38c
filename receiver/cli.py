"""The ``receiver`` command: serve, check a config, make keys and tokens, read the embedded store."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from receiver.errors import ConfigError
from receiver.logs import configure_logging
from receiver.settings import METRICS_DIR_VARIABLE, Settings, config_path_from_env, load_settings


def _load(path: Path | None) -> Settings:
    try:
        settings = load_settings(path)
        from receiver.sources import build_sources  # noqa: PLC0415 - keeps `receiver --help` fast

        build_sources(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the receiver under uvicorn; the config is checked first so mistakes fail fast."""
    import uvicorn  # noqa: PLC0415

    from receiver.connections import GuardedHttpToolsProtocol  # noqa: PLC0415
    from receiver.workers import resolve_workers  # noqa: PLC0415

    path = args.config or config_path_from_env()
    settings = _load(path)
    if path is not None:
        os.environ["RECEIVER_CONFIG"] = str(path.resolve())  # for uvicorn's worker processes
    configure_logging(settings.server.log_level, settings.server.log_format)
    workers = resolve_workers(settings, args.workers)
    workers.announce()
    # uvicorn re-raises the SIGTERM it shut down gracefully for once it is done; with this
    # handler in place that ends here, and a clean SIGTERM exits 0 as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    with _metrics_dir(workers.count) as metrics_dir:
        if metrics_dir is not None:  # inherited by the workers, before they import prometheus_client
            os.environ[METRICS_DIR_VARIABLE] = metrics_dir
        uvicorn.run(
            "receiver.app:app_from_environment",
            factory=True,
            host=args.host or settings.server.host,
            port=args.port or settings.server.port,
            workers=workers.count,
            log_level=settings.server.log_level,
            access_log=False,  # the app writes one canonical line per request instead
            log_config=None,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
            timeout_keep_alive=int(settings.server.keepalive_timeout_seconds),
            http=GuardedHttpToolsProtocol,  # uvicorn's httptools protocol plus a header deadline and a connection cap
            ws="none",  # no WebSocket upgrades: they would bypass the edge, the request log and the limits
            proxy_headers=False,
            server_header=False,
        )
    return 0


@contextmanager
def _metrics_dir(workers: int) -> Iterator[str | None]:
    """A fresh directory for the workers' metric files when there are several (none for one: in memory).

    Fresh on every start, as prometheus_client requires: values from a previous run
    would be added to this one's. Removed when the server stops.
    """
    if workers == 1:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="receiver-metrics-") as directory:
        yield directory


def cmd_check_config(args: argparse.Namespace) -> int:
    """Exit 0 when the config is valid, else 1 with one ``path.to.key: problem`` line each."""
    settings = _load(args.path)
    target = settings.kafka.bootstrap_servers or f"embedded store {settings.store.path}"
    print(f"{args.path}: valid ({len(settings.sources)} source(s), publishing to {target})")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write an RSA 2048 key pair, as the iotcomms docs make it with openssl."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "private.pem", out / "public.pem"
    if (private.exists() or public.exists()) and not args.force:
        print(f"{out} already holds a key pair; pass --force to replace it", file=sys.stderr)
        return 1
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(public_pem)
    print(f"wrote {private} (keep it secret) and {public} (configure it as a public key)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a signed JWT with iat = now and exp = now + ttl, for trying a deployment."""
    import jwt  # noqa: PLC0415

    try:
        key = args.key.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.key}: {exc.strerror}", file=sys.stderr)
        return 1
    now = int(time.time())
    claims = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    try:
        print(jwt.encode(claims, key, algorithm=args.alg))
    except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
        print(f"{args.key} cannot sign {args.alg}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print an Argon2id hash for ``password_hash``; the password comes from stdin or a prompt."""
    import getpass  # noqa: PLC0415

    from receiver.auth.basic import hash_password  # noqa: PLC0415

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two entries differ", file=sys.stderr)
            return 1
    if not password:
        print("an empty password is not accepted", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    """Print the embedded store's events as JSON lines; ``--follow`` keeps printing new ones."""
    from receiver.publish.store import connect, last_seq, read_events  # noqa: PLC0415

    path: Path = args.store or _load(args.config or config_path_from_env()).store.path
    if not path.exists():
        print(f"no event store at {path} yet: start the receiver and post a callback", file=sys.stderr)
        return 1
    conn = connect(path, readonly=True)
    after = max(0, last_seq(conn) - args.lines)
    try:
        while True:
            for event in read_events(conn, after, args.topic):
                after = event.seq
                for line in event.value.splitlines():  # audit records are JSON lines, events one line each
                    print(json.dumps({"seq": event.seq, "topic": event.topic, "event": json.loads(line)}), flush=True)
            if not args.follow:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except sqlite3.Error as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1


def cmd_deadletter_replay(args: argparse.Namespace) -> int:
    """Re-submit dead letters through the pipeline with the current config."""
    import asyncio  # noqa: PLC0415
    from datetime import datetime  # noqa: PLC0415

    from receiver.redrive import redrive  # noqa: PLC0415

    settings = _load(args.config or config_path_from_env())
    since = datetime.fromisoformat(args.since) if args.since else None
    report = asyncio.run(redrive(settings, since=since, source=args.source))
    for letter_id in report.replayed:
        print(f"replayed {letter_id}")
    for letter_id, code in report.still_refused:
        print(f"still refused {letter_id}: {code}", file=sys.stderr)
    print(f"{len(report.replayed)} replayed, {len(report.still_refused)} still refused, {report.skipped} skipped")
    return 1 if report.still_refused else 0


def cmd_routes_test(args: argparse.Namespace) -> int:
    """Print where an event (a CloudEvent as JSON) would be routed under the config."""
    from receiver.routing import Facts, destination  # noqa: PLC0415
    from receiver.sources import build_sources  # noqa: PLC0415

    settings = _load(args.config)
    try:
        event = json.loads(args.event.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.event}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(event, dict):
        print(f"{args.event} does not hold a CloudEvent (a JSON object)", file=sys.stderr)
        return 1
    source_id = str(event.get("sourceid", ""))
    source = build_sources(settings).get(source_id)
    if source is None:
        print(f"no source {source_id!r} in {args.config}", file=sys.stderr)
        return 1
    vendor = source.vendor
    event_name = str(event.get("type", "")).removeprefix(vendor.type_prefix)
    data = event.get("data")
    group = data.get("group") if isinstance(data, dict) and isinstance(data.get("group"), str) else None
    facts = Facts(source_id, vendor.kind, event_name, str(event.get("subject", "")), group)
    where = destination(facts, settings.routes, settings.kafka.topic_prefix, source.settings.topic)
    rule = "default" if where.rule is None else where.rule
    print(json.dumps({"rule": rule, "topics": list(where.topics), "key": where.key, "headers": dict(where.headers)}))
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the JSON Schemas of every model under the output directory."""
    from receiver.schemas import drift, export  # noqa: PLC0415

    if args.check:
        problems = drift(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    written = export(args.out)
    print(f"wrote {len(written)} schema(s) under {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat table of commands reads best
    top = argparse.ArgumentParser(prog="receiver", description="IoT callback receiver and event router.")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the receiver")
    serve.add_argument("--config", type=Path, help="YAML config (default: $RECEIVER_CONFIG)")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers, auto)")
    serve.set_defaults(run=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and its keys and secrets")
    check.add_argument("path", type=Path)
    check.set_defaults(run=cmd_check_config)

    keygen = sub.add_parser("keygen", help="write an RSA 2048 key pair private.pem / public.pem")
    keygen.add_argument("--out", type=Path, required=True)
    keygen.add_argument("--force", action="store_true", help="replace an existing pair")
    keygen.set_defaults(run=cmd_keygen)

    token = sub.add_parser("token", help="print a signed JWT for trying a deployment")
    token.add_argument("--key", type=Path, required=True, help="private key PEM")
    token.add_argument("--sub", required=True, help="the customer domain, e.g. customer47.prod-eu-north-1.iotcomms.io")
    token.add_argument("--ttl", type=int, default=300, help="seconds until exp (default 300)")
    token.add_argument("--alg", default="RS256", choices=["RS256", "RS384", "RS512", "PS256", "ES256", "EdDSA"])
    token.set_defaults(run=cmd_token)

    hashing = sub.add_parser("hash-password", help="print an Argon2id hash for a Basic password_hash")
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hashing.set_defaults(run=cmd_hash_password)

    deadletter = sub.add_parser("deadletter", help="dead letters")
    deadletter_sub = deadletter.add_subparsers(dest="deadletter_command", required=True)
    replay = deadletter_sub.add_parser("replay", help="re-submit dead letters through the pipeline")
    replay.add_argument("--config", type=Path, help="YAML config (default: $RECEIVER_CONFIG)")
    replay.add_argument("--since", help="only letters received at or after this RFC 3339 time")
    replay.add_argument("--source", help="only letters of this source")
    replay.set_defaults(run=cmd_deadletter_replay)

    schemas = sub.add_parser("schemas", help="JSON Schemas of payloads and events")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write schemas/ from the models")
    export.add_argument("--out", type=Path, default=Path("schemas"))
    export.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    export.set_defaults(run=cmd_schemas_export)

    routes = sub.add_parser("routes", help="routing rules")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    routes_test = routes_sub.add_parser("test", help="print where an event would go")
    routes_test.add_argument("config", type=Path)
    routes_test.add_argument("event", type=Path, help="a CloudEvent as JSON (as on Kafka, or from a dry run)")
    routes_test.set_defaults(run=cmd_routes_test)

    events = sub.add_parser("events", help="read the embedded event store")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser("tail", help="print stored events as JSON lines")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--lines", "-n", type=int, default=10, help="how many past events to print first")
    tail.add_argument("--topic", help="only this topic")
    tail.add_argument("--config", type=Path, help="YAML config naming store.path")
    tail.add_argument("--store", type=Path, help="the store file (overrides the config)")
    tail.set_defaults(run=cmd_events_tail)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
