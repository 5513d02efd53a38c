"""Worker processes: how many (CPUs, cgroup quota, where the state lives), and exact metrics across them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from receiver.errors import ConfigError
from receiver.publish.store import connect, read_events
from receiver.settings import Settings, build_settings
from receiver.workers import available_cpus, cgroup_cpu_limit, resolve_workers
from tests.conftest import BASIC_PASSWORD, DOMAIN, message_body
from tests.support.server import run_receiver

REDIS = {"url": "redis://127.0.0.1:6379/0"}


def cgroup(root: Path, files: dict[str, str]) -> Path:
    """Fake cgroup files under ``root``, as the kernel shows them."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def settings(workers: int | str = "auto", state: dict[str, str] | None = None) -> Settings:
    return build_settings({"server": {"workers": workers}, "state": state or {}}, environ=False)


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        pytest.param({"cpu.max": "max 100000"}, None, id="v2-unlimited"),
        pytest.param({"cpu.max": "150000 100000"}, 1.5, id="v2-one-and-a-half"),
        pytest.param({"cpu.max": "50000 100000"}, 0.5, id="v2-half"),
        pytest.param({"cpu.max": "garbage"}, None, id="v2-malformed"),
        pytest.param({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None, id="v1-unlimited"),
        pytest.param({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0, id="v1-three"),
        pytest.param({"cpu/cpu.cfs_quota_us": "300000"}, None, id="v1-no-period"),
        pytest.param({}, None, id="no-cgroup-files"),
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    """The quota is read from cgroup v2 ``cpu.max`` or v1's CFS files; unlimited, missing or malformed is none."""
    assert cgroup_cpu_limit(cgroup(tmp_path, files)) == limit


def test_unreadable_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    """A ``cpu.max`` that cannot be read (here a directory) is no quota, not a failure."""
    (tmp_path / "cpu.max").mkdir()
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize(
    ("files", "schedulable", "cpus"),
    [
        pytest.param({"cpu.max": "max 100000"}, 8, 8, id="no-quota-affinity-decides"),
        pytest.param({"cpu.max": "150000 100000"}, 8, 2, id="quota-rounded-up"),
        pytest.param({"cpu.max": "400000 100000"}, 2, 2, id="affinity-below-quota"),
        pytest.param({"cpu.max": "10000 100000"}, 8, 1, id="a-tenth-is-one"),
        pytest.param({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 16, 2, id="v1-quota"),
    ],
)
def test_available_cpus(tmp_path: Path, files: dict[str, str], schedulable: int, cpus: int) -> None:
    """Available CPUs: the schedulable ones, capped by the quota rounded up, at least 1."""
    assert available_cpus(cgroup(tmp_path, files), schedulable=schedulable) == cpus


def test_available_cpus_of_this_process(tmp_path: Path) -> None:
    """Without injected affinity, this process's own CPU set counts (at least one)."""
    assert available_cpus(cgroup(tmp_path, {})) >= 1


@pytest.mark.parametrize(
    ("workers", "state", "flag", "count"),
    [
        pytest.param("auto", None, None, 1, id="auto-in-process-state-is-one"),
        pytest.param("auto", REDIS, None, 4, id="auto-shared-state-is-the-cpus"),
        pytest.param(3, None, None, 3, id="explicit-number-honoured"),
        pytest.param("auto", None, 2, 2, id="flag-over-auto"),
        pytest.param(3, REDIS, 1, 1, id="flag-over-number"),
    ],
)
def test_resolve_workers(
    tmp_path: Path, workers: int | str, state: dict[str, str] | None, flag: int | None, count: int
) -> None:
    """``auto`` is the CPUs only when the state is shared through Redis; a number or ``--workers`` wins."""
    root = cgroup(tmp_path, {"cpu.max": "350000 100000"})
    assert resolve_workers(settings(workers, state), flag, root=root, schedulable=8).count == count


def test_auto_is_capped_at_the_settings_maximum(tmp_path: Path) -> None:
    """A very large machine still gets no more workers than ``server.workers`` allows."""
    assert resolve_workers(settings("auto", REDIS), root=tmp_path, schedulable=512).count == 64


def test_auto_with_in_process_state_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With several CPUs and in-process state, one info line says auto chose one worker and how to change it."""
    caplog.set_level(logging.INFO, logger="receiver")
    resolve_workers(settings(), root=tmp_path, schedulable=4).announce()
    [record] = [r for r in caplog.records if r.name == "receiver"]
    assert (record.levelname, record.getMessage()) == ("INFO", "receiver.workers_limited")
    assert (record.__dict__["workers"], record.__dict__["cpus"]) == (1, 4)
    assert "state.url" in record.__dict__["reason"]


def test_several_workers_with_in_process_state_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An explicit number above one with in-process state runs, with a warning that protections are per worker."""
    caplog.set_level(logging.INFO, logger="receiver")
    workers = resolve_workers(settings(3), root=tmp_path, schedulable=4)
    workers.announce()
    assert workers.count == 3
    [record] = [r for r in caplog.records if r.name == "receiver"]
    assert (record.levelname, record.getMessage()) == ("WARNING", "receiver.workers_state_per_worker")
    assert "replay protection, dedup and budgets are per worker" in record.__dict__["reason"]


def test_shared_state_needs_no_explanation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With state in Redis, any worker count is safe and nothing is logged about it."""
    caplog.set_level(logging.INFO, logger="receiver")
    resolve_workers(settings("auto", REDIS), root=tmp_path, schedulable=4).announce()
    resolve_workers(settings(2, REDIS), root=tmp_path, schedulable=4).announce()
    assert [r for r in caplog.records if r.name == "receiver"] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("auto", "auto", id="auto"),
        pytest.param("4", 4, id="number"),
    ],
)
def test_workers_from_the_environment(value: str, expected: int | str) -> None:
    """``RECEIVER_SERVER__WORKERS`` (what the Helm chart sets) parses ``auto`` and numbers."""
    code = "from receiver.settings import build_settings as b; print(repr(b({}).server.workers))"
    env = {**os.environ, "RECEIVER_SERVER__WORKERS": value}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == repr(expected)


@pytest.mark.parametrize("value", [0, 65, "many", True, 1.5])
def test_bad_worker_counts_are_config_errors(value: object) -> None:
    """Anything but ``auto`` or 1..64 is refused with one message naming both forms."""
    with pytest.raises(ConfigError) as raised:
        build_settings({"server": {"workers": value}}, environ=False)
    assert raised.value.problems == ["server.workers: must be auto or a whole number from 1 to 64"]


def requests_by_worker(metrics_dir: Path) -> list[float]:
    """Each worker's own count of customer47's requests, read from its metric file."""
    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        families = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        samples = [s for m in families if m.name == "receiver_requests" for s in m.samples]  # none until it served
        counts.append(sum(s.value for s in samples if s.labels.get("source") == "customer47"))
    return counts


def scrape(url: str) -> dict[str, float]:
    """One scrape on a new connection: each sample name summed over the label sets of customer47 (or none)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("source", "customer47") == "customer47":
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_two_workers_share_exact_metrics(tmp_path: Path) -> None:
    """With ``--workers 2`` every scrape counts every worker's requests, and both wrote the one store."""
    (tmp_path / "pw").write_text(BASIC_PASSWORD + "\n")
    (tmp_path / "tmp").mkdir()
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"""
store: {{path: {tmp_path / "events.db"}}}
audit: {{enabled: false}}
sources:
  customer47:
    kind: iotcomms
    domain: {DOMAIN}
    auth: [{{type: basic, username: iotcomms, password_file: {tmp_path / "pw"}}}]
"""
    )

    def deliver(url: str, n: int) -> int:
        # A new connection per request, so the kernel hands them to either worker.
        body = message_body(body=f"message {n}")
        with httpx.Client(base_url=url, timeout=10) as client:
            return client.post(
                "/v1/callbacks/customer47/message", json=body, auth=("iotcomms", BASIC_PASSWORD)
            ).status_code

    sent = 0
    with run_receiver(config, args=["--workers", "2"], env={"TMPDIR": str(tmp_path / "tmp")}) as receiver:
        [metrics_dir] = (tmp_path / "tmp").glob("receiver-metrics-*")
        with ThreadPoolExecutor(max_workers=6) as pool:
            # Rounds until both workers have answered some (the kernel decides who accepts).
            for _ in range(20):
                statuses = list(pool.map(lambda n: deliver(receiver.url, n), range(sent, sent + 12)))
                assert statuses == [200] * 12
                sent += 12
                if sum(count > 0 for count in requests_by_worker(metrics_dir)) >= 2:
                    break
        per_worker = requests_by_worker(metrics_dir)
        assert sorted(count > 0 for count in per_worker) == [True, True], per_worker
        assert sum(per_worker) == sent
        for _ in range(6):
            found = scrape(receiver.url)
            assert found["receiver_requests_total"] == sent
            assert found["receiver_request_duration_seconds_count"] == sent
            assert found["receiver_events_published_total"] == sent
            assert found["receiver_requests_in_flight"] == 1  # this scrape, in whichever worker serves it
            assert found["receiver_publish_pending_records"] == 0
            assert found["receiver_store_depth_events"] == sent
    assert receiver.process.returncode == 0  # SIGTERM: both workers drained, the parent exited cleanly
    assert not metrics_dir.exists()  # removed when the server stopped
    stored = list(read_events(connect(tmp_path / "events.db", readonly=True), topic="iot.iotcomms.message"))
    assert len(stored) == sent
