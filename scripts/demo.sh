#!/usr/bin/env bash
# Install the receiver and run it on the embedded event store with examples/receiver.yaml.
# First run makes a demo key pair (.demo/keys) and a demo Basic password (.demo/secrets).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5"
uv() { python3 -m uv "$@"; }

uv sync --frozen --quiet --no-dev
[ -f .demo/keys/public.pem ] || uv run --frozen --no-dev receiver keygen --out .demo/keys
if [ ! -f .demo/secrets/customer47-basic ]; then
  mkdir -p .demo/secrets
  python3 -c 'import secrets; print(secrets.token_urlsafe(18))' > .demo/secrets/customer47-basic
  chmod 600 .demo/secrets/customer47-basic
fi
exec uv run --frozen --no-dev receiver serve --config examples/receiver.yaml "$@"
