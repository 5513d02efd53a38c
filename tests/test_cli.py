"""The ``receiver`` command, driven through its entry point and as a subprocess."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.auth.base import Credentials
from receiver.auth.jwt import JwtAuthSettings, JwtVerifier
from receiver.cli import main
from receiver.errors import InvalidCredentialsError
from receiver.settings import load_settings
from tests.conftest import DOMAIN, message_body


def write_config(tmp_path: Path, public_key: Path, extra: str = "") -> Path:
    (tmp_path / "pw").write_text("pw\n")
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"""
store: {{path: {tmp_path / "events.db"}}}
sources:
  customer47:
    kind: iotcomms
    domain: {DOMAIN}
    auth:
      - type: jwt
        public_keys: [{public_key}]
      - type: basic
        username: iotcomms
        password_file: {tmp_path / "pw"}
{extra}"""
    )
    return config


def test_keygen_then_token_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``keygen`` writes a usable RSA pair; ``token`` signs an iotcomms JWT the receiver accepts."""
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "private.pem").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["token", "--key", str(tmp_path / "private.pem"), "--sub", DOMAIN, "--ttl", "600"]) == 0
    token = capsys.readouterr().out.strip()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    verifier = JwtVerifier.from_settings(JwtAuthSettings(type="jwt", public_keys=[tmp_path / "public.pem"]), DOMAIN)
    principal = verifier.verify(Credentials({b"authorization": f"Bearer {token}".encode()}, b"", time.time()))
    assert principal.name == DOMAIN
    assert principal.claims["exp"] - principal.claims["iat"] == 600


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    """An existing pair is kept unless --force is given."""
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "private.pem").read_bytes()
    assert main(["keygen", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "private.pem").read_bytes() == before
    assert main(["keygen", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "private.pem").read_bytes() != before


def test_check_config_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config exits 0."""
    main(["keygen", "--out", str(tmp_path / "k")])
    config = write_config(tmp_path, tmp_path / "k" / "public.pem")
    assert main(["check-config", str(config)]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_config_reports_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid config exits 1, printing ``path: problem`` for a missing key file."""
    config = write_config(tmp_path, tmp_path / "missing.pem")
    with pytest.raises(SystemExit) as exited:
        main(["check-config", str(config)])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "sources.customer47.auth.0.public_keys.0: cannot read" in err


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """``RECEIVER_KAFKA__BOOTSTRAP_SERVERS`` wins over the YAML file (seen through the real CLI)."""
    main(["keygen", "--out", str(tmp_path / "k")])
    config = write_config(tmp_path, tmp_path / "k" / "public.pem")
    env = {**os.environ, "RECEIVER_KAFKA__BOOTSTRAP_SERVERS": "not-host-port"}
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", str(config)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "kafka.bootstrap_servers: 'not-host-port' is not host:port" in result.stderr
    env["RECEIVER_KAFKA__BOOTSTRAP_SERVERS"] = "10.0.0.1:9092"
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", str(config)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "10.0.0.1:9092" in result.stdout


def test_settings_without_environ_ignore_the_environment() -> None:
    """``build_settings(..., environ=False)`` reads the mapping alone, whatever ``RECEIVER_*`` says (was: applied)."""
    code = "from receiver.settings import build_settings as b; print(b({}, environ=False).kafka.bootstrap_servers)"
    env = {**os.environ, "RECEIVER_KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9092"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "None"


def test_events_tail_prints_stored_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Events accepted on the embedded store are printed by ``events tail`` as JSON lines."""
    main(["keygen", "--out", str(tmp_path / "k")])
    config = write_config(tmp_path, tmp_path / "k" / "public.pem")
    with TestClient(create_app(load_settings(config, environ=False))) as client:
        response = client.post("/v1/callbacks/customer47/message", json=message_body(), auth=("iotcomms", "pw"))
        assert response.status_code == 200
    capsys.readouterr()
    assert main(["events", "tail", "--store", str(tmp_path / "events.db"), "--topic", "iot.iotcomms.message"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["topic"], line["event"]["id"]) for line in lines] == [("iot.iotcomms.message", response.json()["id"])]


def test_events_tail_without_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tailing before anything was stored says so and exits 1."""
    assert main(["events", "tail", "--store", str(tmp_path / "none.db")]) == 1
    assert "no event store" in capsys.readouterr().err


def test_hash_password_verifies(tmp_path: Path) -> None:
    """``hash-password`` prints an Argon2id hash that Basic auth accepts for that password only."""
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "hash-password", "--stdin"],
        input="correct horse\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    hashed = result.stdout.strip()
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in result.stdout
    from receiver.auth.basic import BasicVerifier  # noqa: PLC0415

    verifier = BasicVerifier("u", password_hash=hashed)
    good = base64.b64encode(b"u:correct horse").decode()
    bad = base64.b64encode(b"u:correct horsE").decode()
    assert verifier.verify(Credentials({b"authorization": f"Basic {good}".encode()}, b"", 0)).name == "u"
    with pytest.raises(InvalidCredentialsError):
        verifier.verify(Credentials({b"authorization": f"Basic {bad}".encode()}, b"", 0))
