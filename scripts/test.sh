#!/usr/bin/env bash
# Install everything and run the whole suite: lint, types, unit and integration tests.
# The integration tests start a real Apache Kafka broker (KRaft, one node, 127.0.0.1);
# scripts/kafka_broker.py fetches it with Maven and installs Java and Maven with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5"
uv() { python3 -m uv "$@"; }

uv sync --frozen --quiet --all-extras
uv run --frozen python scripts/kafka_broker.py fetch >/dev/null   # fail early, with mvn's words, if Kafka can't be had
uv run --frozen python scripts/redis_server.py ensure >/dev/null  # Debian's redis-server, for the shared-state tests
uv run --frozen ruff format --check .
uv run --frozen ruff check .
uv run --frozen mypy
uv run --frozen lint-imports          # layers, and: only the registries import a vendor or auth method
uv run --frozen pytest --cov --cov-report=term:skip-covered "$@"   # the floor is [tool.coverage.report]
bash scripts/check-deploy.sh    # hadolint, the image's install steps, helm lint, kubeconform
