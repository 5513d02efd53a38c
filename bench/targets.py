"""The targets of one benchmark run: each a server process, the request it is sent, and its Kafka topic.

Every target is served by uvicorn on 127.0.0.1 with the same options: one worker unless
stated, no access log, no proxy headers, no server header, uvloop and httptools. Each
receiver target has a config of its own with its own topic prefix, so the records of
one target are counted apart from the others'.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from floor_app import BOOTSTRAP_VARIABLE, TOPIC_VARIABLE
from loadgen import Request
from servers import BenchError, Server

from receiver.auth.jwt import _CACHE_SIZE as VERIFIED_TOKEN_CACHE  # the bench must outgrow it, whatever it is

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent

SOURCE = "customer47"
DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
CALLBACK_PATH = f"/v1/callbacks/{SOURCE}/message"
ECHO_PATH = "/echo"
FLOOR_TOPIC = "bench-floor.records"
BODY = (
    b'{"from":"sip:alice@customer47.prod-eu-north-1.iotcomms.io","to":"sip:bob@example.com",'
    b'"contentType":"text/plain","body":"hello","replyId":"r-123"}'
)
# Twice the receiver's verified-token cache: cycling through them in order, a token comes
# round again only after as many others as the cache holds have pushed it out.
MISS_TOKENS = 2 * VERIFIED_TOKEN_CACHE


@dataclass(frozen=True)
class Spec:
    """What a target is, before anything runs."""

    key: str
    title: str
    kind: str  # "app": a bench app; "floor": the aiokafka floor; "receiver": `receiver serve`
    module: str = ""  # the bench app's module, for "app" and "floor"
    audit: bool = True
    workers: int = 1
    token_per_request: bool = False
    budget: bool = False  # the source has a rate limit: one state check per request
    redis: bool = False  # the state lives in the run's Redis

    @property
    def topic(self) -> str | None:
        """The topic this target's 2xx answers must be in, if any."""
        if self.kind == "floor":
            return FLOOR_TOPIC
        if self.kind == "receiver":
            return f"{self.prefix}.iotcomms.message"
        return None

    @property
    def prefix(self) -> str:
        return f"bench-{self.key}"


SPECS = (
    Spec("hello", "raw ASGI: read the body, answer small JSON", "app", module="hello_app"),
    Spec("bare", "bare Starlette POST route", "app", module="bare_app"),
    Spec("floor", "raw ASGI + aiokafka, one acks=all send awaited", "floor", module="floor_app"),
    Spec("receiver", "receiver: cached RS256 JWT, audit on", "receiver"),
    Spec("receiver-noaudit", "receiver, audit trail off", "receiver", audit=False),
    Spec("receiver-miss", f"receiver, a new token each request ({MISS_TOKENS} cycled)", "receiver",
         token_per_request=True),
    Spec("receiver-2w", "receiver, 2 workers", "receiver", workers=2),
    Spec("receiver-budget", "receiver, a source budget kept in process", "receiver", budget=True),
    Spec("receiver-redis", "receiver, the source budget in Redis (a round trip a request)", "receiver",
         budget=True, redis=True),
)  # fmt: skip
KEYS = tuple(spec.key for spec in SPECS)


@dataclass
class Target:
    """A spec made real: its server, its request, and the 2xx answers it gave, phase by phase."""

    spec: Spec
    server: Server
    request: Request
    answered_2xx: dict[str, int]

    @property
    def key(self) -> str:
        return self.spec.key


def make_keys_and_token(workdir: Path) -> tuple[Path, str]:
    """Key pair and token come from the receiver's own CLI, exactly as an operator would make them."""
    keys = workdir / "keys"
    cli = [sys.executable, "-m", "receiver"]
    subprocess.run([*cli, "keygen", "--out", str(keys)], check=True, capture_output=True, timeout=60, cwd=ROOT)
    token = subprocess.run(
        [*cli, "token", "--key", str(keys / "private.pem"), "--sub", DOMAIN, "--ttl", "3000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    ).stdout.strip()
    if token.count(".") != 2:
        msg = f"`receiver token` printed no JWT: {token[:200]!r}"
        raise BenchError(msg)
    return keys, token


def write_tokens(private_key: Path, out: Path, count: int) -> Path:
    """``count`` distinct valid tokens, one a line, signed in process (the CLI would take minutes).

    RS256 signatures are deterministic, so a distinct ``jti`` makes each token distinct;
    the source does not set ``reject_replayed_jti``, so a token may come round again.
    """
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    now = int(time.time())
    claims = {"sub": DOMAIN, "iat": now, "exp": now + 3000}
    tokens = [jwt.encode({**claims, "jti": f"bench-{i}"}, key, algorithm="RS256") for i in range(count)]  # type: ignore[arg-type]
    out.write_text("\n".join(tokens) + "\n")
    return out


def write_config(  # noqa: PLR0917 - one target's whole config
    path: Path, spec: Spec, port: int, bootstrap: str, public_key: Path, redis_url: str | None
) -> Path:
    source: dict[str, Any] = {
        "kind": "iotcomms",
        "domain": DOMAIN,
        "auth": [{"type": "jwt", "algorithms": ["RS256"], "public_keys": [str(public_key)]}],
    }
    if spec.budget:
        source["rate_limit"] = {"requests_per_minute": 1_000_000_000}  # never spent: the check is what costs
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": spec.prefix, "topics": {"create": True}},
        "audit": {"enabled": spec.audit},
        "sources": {SOURCE: source},
    }
    if spec.redis:
        if redis_url is None:
            msg = f"{spec.key} needs the run's Redis"
            raise BenchError(msg)
        config["state"] = {"url": redis_url, "key_prefix": f"{spec.prefix}:"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def uvicorn_argv(module: str, port: int) -> list[str]:
    """The bench apps' command: the options `receiver serve` gives uvicorn, spelled out."""
    return [
        sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(BENCH),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log", "--no-proxy-headers", "--no-server-header",
    ]  # fmt: skip


def build(  # noqa: PLR0917 - where each part of the run is
    specs: list[Spec],
    workdir: Path,
    bootstrap: str,
    env: dict[str, str],
    free_port: Callable[[], int],
    redis_url: str | None = None,
) -> list[Target]:
    """Servers (not started yet) and requests for ``specs``; keys and tokens are made once for all."""
    port_of = {spec.key: free_port() for spec in specs}
    keys, token = make_keys_and_token(workdir) if any(s.kind == "receiver" for s in specs) else (workdir, "")
    tokens = None
    if any(s.token_per_request for s in specs):
        tokens = write_tokens(keys / "private.pem", workdir / "tokens.txt", MISS_TOKENS)
    targets = []
    for spec in specs:
        port = port_of[spec.key]
        log = workdir / f"{spec.key}.log"
        json_header = {"Content-Type": "application/json"}
        if spec.kind == "receiver":
            config = write_config(workdir / f"{spec.key}.yaml", spec, port, bootstrap, keys / "public.pem", redis_url)
            argv = [sys.executable, "-m", "receiver", "serve", "--config", str(config), "--workers", str(spec.workers)]
            server = Server(spec.key, argv, log, env, ROOT)
            headers = {**json_header, "Authorization": f"Bearer {token}"}
            request = Request(port, CALLBACK_PATH, BODY, headers, tokens if spec.token_per_request else None)
        else:
            server_env = env
            if spec.kind == "floor":
                server_env = {**env, BOOTSTRAP_VARIABLE: bootstrap, TOPIC_VARIABLE: FLOOR_TOPIC}
            server = Server(spec.key, uvicorn_argv(spec.module, port), log, server_env, ROOT)
            request = Request(port, ECHO_PATH, BODY, json_header)
        targets.append(Target(spec, server, request, {}))
    return targets
