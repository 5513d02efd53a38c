"""Loading the configuration: YAML, environment overrides, secrets from files, problems as paths."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from receiver.auth.material import Secret
from receiver.errors import ConfigError
from receiver.settings import StateSettings, build_settings, load_settings

README_EXAMPLE = """
kafka:
  bootstrap_servers: 127.0.0.1:9092
  topic_prefix: iot
sources:
  customer47:
    kind: iotcomms
    domain: customer47.prod-eu-north-1.iotcomms.io
    auth:
      - type: jwt
        algorithms: [RS256]
        public_keys: [/etc/receiver/keys/customer47.pem]
      - type: basic
        username: iotcomms
        password_file: /etc/receiver/secrets/customer47-basic
"""


def test_issue_shape_loads(tmp_path: Path) -> None:
    """The documented config shape validates as written."""
    path = tmp_path / "receiver.yaml"
    path.write_text(README_EXAMPLE)
    settings = load_settings(path, environ=False)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    source = settings.sources["customer47"]
    assert source.kind == "iotcomms"
    assert [a.type for a in source.auth] == ["jwt", "basic"]


def test_password_file_is_read_and_hidden(tmp_path: Path) -> None:
    """A password file's content (minus the trailing newline) is the secret; its repr hides it."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    auth = Secret(file=secret, id="s1")
    assert auth.secret().get_secret_value() == "hunter2"
    assert "hunter2" not in repr(auth.secret())
    assert "hunter2" not in repr(Secret(value="hunter2"))


def test_problems_are_reported_as_paths() -> None:
    """Every problem is one ``path.to.key: what is wrong`` line."""
    data = yaml.safe_load(
        """
        kafka: {bootstrap_servers: "no-port"}
        sources:
          Bad Id: {kind: iotcomms, domain: d, auth: [{type: jwt, public_keys: [k.pem]}]}
          good: {kind: sigfax, auth: []}
          nodomain: {kind: iotcomms, auth: [{type: basic, username: u}]}
        """
    )
    with pytest.raises(ConfigError) as caught:
        build_settings(data, environ=False)
    problems = caught.value.problems
    assert "kafka.bootstrap_servers: 'no-port' is not host:port" in problems
    assert any(p.startswith("sources.Bad Id.[key]:") for p in problems)
    assert any(p.startswith("sources.good.kind:") for p in problems)
    assert any(p.startswith("sources.good.auth:") for p in problems)
    assert any(p.startswith("sources.nodomain.auth.0.basic:") and "password" in p for p in problems)


def test_unknown_keys_are_refused() -> None:
    """A typo in a key name is an error, not silently ignored."""
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server: Extra inputs"):
        build_settings({"kafka": {"bootstrap_server": "a:1"}}, environ=False)


def test_unreadable_yaml_file(tmp_path: Path) -> None:
    """A missing file or invalid YAML is reported, not raised as a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ=False)


def test_yaml_errors_never_quote_the_file(tmp_path: Path) -> None:
    """A YAML syntax error names the line and column, never the line's text (it may hold a secret)."""
    config = tmp_path / "bad.yaml"
    config.write_text('sources:\n  a:\n    auth: [{type: basic, password: "s3cret-inline" x}]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=False)
    (problem,) = caught.value.problems
    assert "line 3, column" in problem
    assert "s3cret-inline" not in str(caught.value)


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o600, False), (0o640, False)])
def test_secret_files_others_can_read_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    """A secret file readable by other users is used, with a warning naming it; its own group may read it."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    secret.chmod(mode)
    with caplog.at_level(logging.WARNING):
        assert Secret(file=secret).secret().get_secret_value() == "s3cret-value"
    exposed = [r for r in caplog.records if r.getMessage() == "receiver.secret_file_exposed"]
    assert bool(exposed) is warned
    assert all("s3cret" not in str(vars(r)) for r in caplog.records)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://127.0.0.1:6379/0?password=hunter2", id="password"),
        pytest.param("redis://127.0.0.1:6379/0?db=0&username=app", id="username"),
        pytest.param("rediss://127.0.0.1:6379/0?ssl_password=hunter2", id="ssl-password"),
        pytest.param("redis://:hunter2@127.0.0.1:6379/0", id="netloc"),
    ],
)
def test_state_url_refuses_credentials(url: str) -> None:
    """A credential anywhere in state.url is refused at load, with a message pointing at password_file."""
    with pytest.raises(ValueError, match="password_file"):
        StateSettings(url=url)


def test_state_url_keeps_plain_options() -> None:
    """Options that are not credentials still pass."""
    assert StateSettings(url="redis://127.0.0.1:6379/0?socket_keepalive=true").url is not None
