"""Key rotation without restart: SIGHUP and the file watch, on a real server process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import DOMAIN, claims, message_body
from tests.support.server import run_receiver


def make_key(path: Path) -> bytes:
    """Write a public key to ``path``; return the private key PEM."""
    key = rsa.generate_private_key(65537, 2048)
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_config(path: Path, key_files: list[Path], store: Path, watch: float = 0) -> None:
    keys = ", ".join(str(k) for k in key_files)
    path.write_text(
        f"""
server: {{log_level: info, log_format: json, reload_interval_seconds: {watch}}}
store: {{path: {store}}}
sources:
  customer47:
    kind: iotcomms
    domain: {DOMAIN}
    auth: [{{type: jwt, public_keys: [{keys}]}}]
"""
    )


def status(base: str, private_pem: bytes) -> int:
    token = jwt.encode(claims(), private_pem, algorithm="RS256")
    response = httpx.post(
        f"{base}/v1/callbacks/customer47/message",
        json=message_body(body=os.urandom(6).hex()),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


def eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_sighup_rotates_keys(tmp_path: Path) -> None:
    """The old key works before SIGHUP, the new one after; the removed one is refused; a broken file changes nothing."""
    old_pem, new_pem = make_key(tmp_path / "old.pem"), make_key(tmp_path / "new.pem")
    config = tmp_path / "receiver.yaml"
    write_config(config, [tmp_path / "old.pem"], tmp_path / "events.db")
    with run_receiver(config) as receiver:
        process, base = receiver.process, receiver.url
        assert status(base, old_pem) == 200
        assert status(base, new_pem) == 401

        write_config(config, [tmp_path / "new.pem"], tmp_path / "events.db")
        process.send_signal(signal.SIGHUP)
        assert eventually(lambda: status(base, new_pem) == 200), receiver.output()
        assert status(base, old_pem) == 401

        config.write_text("sources: [this is not a mapping")
        process.send_signal(signal.SIGHUP)
        assert eventually(lambda: "receiver.reload_refused" in receiver.output())
        assert status(base, new_pem) == 200  # the broken file kept the working keys
        assert process.poll() is None


def test_file_watch_picks_up_a_replaced_key(tmp_path: Path) -> None:
    """With reload_interval_seconds set, replacing a key file is enough (as a Secret volume update does)."""
    first = make_key(tmp_path / "key.pem")
    config = tmp_path / "receiver.yaml"
    write_config(config, [tmp_path / "key.pem"], tmp_path / "events.db", watch=0.2)
    with run_receiver(config) as receiver:
        base = receiver.url
        assert status(base, first) == 200
        time.sleep(1.1)  # a new modification time, whatever the filesystem's resolution
        second = make_key(tmp_path / "key.pem")
        assert eventually(lambda: status(base, second) == 200)
        assert status(base, first) == 401
