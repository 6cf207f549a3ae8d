#!/usr/bin/env bash
# Checks the Helm chart, the Dockerfile and the project's shell scripts.
# Run by .ci/run after scripts/install-tools.sh; uses only .tools/bin.
#
# usage: scripts/check-chart.sh [path/to/drasi-store-operator]
#   The operator binary provides `drasi-store-operator rbac` (the RBAC rules the
#   reconciler needs). Without an argument it is run via `cargo run`.
#
# Checks, each must pass:
#   1. hadolint Dockerfile; the Docker build context after .dockerignore holds
#      everything the release build reads (scripts/lib/docker_context_check.py);
#      ShellCheck on scripts/*.sh and tests/e2e/*.sh
#   2. Chart.yaml appVersion == the Cargo workspace version
#   3. the chart's crds/ copies are byte-identical to crds/*.yaml
#   4. helm lint --strict with the default values and every ci/*-values.yaml
#   5. helm template of each of those; every rendered object validated with
#      `kubernetes-validate --strict` against the oldest (1.25) and newest
#      supported Kubernetes schemas. ServiceMonitor (monitoring.coreos.com/v1)
#      is a CRD kind the official schemas do not know: it is excluded from
#      kubernetes-validate and checked structurally by scripts/lib/chart_assert.py
#      (selector, port, path, interval). Any other object without a schema fails.
#   6. chart_assert.py: the values -> manifest behaviour the chart promises
#   7. every ci/invalid/*.yaml must make `helm template` fail on values.schema.json
#   8. the ClusterRole/Role rules granted in each rendering cover exactly what
#      `drasi-store-operator rbac` prints (scripts/lib/rbac_compare.py)
#   9. the operator binary's CLI accepts the args each rendering passes it
#      (`drasi-store-operator <args> --help` parses them, flag names and values)
#  10. `helm package` produces a chart that holds the CRD, leaves out ci/ and renders
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS_BIN="${TOOLS_DIR:-$ROOT/.tools}/bin"
CHART=charts/drasi-store-operator
RELEASE=drasi-store-operator
RELEASE_NS=drasi-system
K8S_VERSIONS=(1.25.0 1.37.0)

for t in helm hadolint shellcheck kubernetes-validate tools-python; do
  if [ ! -x "$TOOLS_BIN/$t" ]; then
    echo "check-chart: $TOOLS_BIN/$t missing: run scripts/install-tools.sh first" >&2
    exit 2
  fi
done
export PATH="$TOOLS_BIN:$PATH"
PY="$TOOLS_BIN/tools-python"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
pass() { printf '  PASS  %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failed=1; }
section() { printf '\n-- %s\n' "$*"; }

section "Dockerfile and shell scripts"
if hadolint Dockerfile; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
# No Docker engine in CI: check that .dockerignore keeps what the build needs.
if ctx="$("$PY" scripts/lib/docker_context_check.py "$ROOT")"; then
  pass "Docker build context: $ctx"
else
  printf '%s\n' "$ctx"; fail "Docker build context (.dockerignore) lacks files the image build needs"
fi
mapfile -t shell_scripts < <(ls scripts/*.sh scripts/bench/*.sh tests/e2e/*.sh .ci/run 2>/dev/null)
if shellcheck -x "${shell_scripts[@]}"; then
  pass "shellcheck ${shell_scripts[*]}"
else
  fail "shellcheck"
fi

section "Chart metadata"
workspace_version="$("$PY" - <<'PY'
import re
text = open("Cargo.toml").read()
section = re.search(r"^\[workspace\.package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
m = section and re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
print(m.group(1) if m else "")
PY
)"
read -r chart_version app_version < <("$PY" -c '
import yaml; c = yaml.safe_load(open("'"$CHART"'/Chart.yaml")); print(c["version"], c["appVersion"])')
if [ -n "$workspace_version" ] && [ "$app_version" = "$workspace_version" ]; then
  pass "Chart appVersion $app_version == workspace version (Cargo.toml)"
else
  fail "Chart appVersion '$app_version' != workspace version '$workspace_version' (Cargo.toml [workspace.package])"
fi
if [ "$chart_version" = "$workspace_version" ]; then
  pass "Chart version $chart_version == workspace version"
else
  fail "Chart version '$chart_version' != workspace version '$workspace_version'"
fi
for crd_file in crds/*.yaml; do
  if cmp -s "$crd_file" "$CHART/$crd_file"; then
    pass "$CHART/$crd_file == $crd_file"
  else
    fail "$CHART/$crd_file differs from crds/: cp $crd_file $CHART/crds/"
  fi
done
[ -f crds/drasistatestores.drasi.io.yaml ] || fail "crds/drasistatestores.drasi.io.yaml does not exist (generate it: drasi-store-operator crd)"
[ -f crds/drasistatestorebackups.drasi.io.yaml ] || fail "crds/drasistatestorebackups.drasi.io.yaml does not exist (generate it: drasi-store-operator crd --name drasistatestorebackups.drasi.io)"
extra_crds="$(cd "$CHART" && for f in crds/*; do [ -f "$f" ] && ! [ -f "$ROOT/$f" ] && echo "$f"; done || true)"
if [ -z "$extra_crds" ]; then pass "the chart's crds/ holds exactly the CRDs of crds/"; else fail "unexpected files in $CHART/crds: $extra_crds"; fi

section "Operator RBAC rules (drasi-store-operator rbac)"
rbac_rules="$WORK/operator-rbac.yaml"
if [ $# -ge 1 ]; then
  operator_cmd=("$1")
else
  operator_cmd=(cargo run -q --locked -p drasi-store-operator --)
fi
if "${operator_cmd[@]}" rbac >"$rbac_rules" 2>"$WORK/rbac.err" && [ -s "$rbac_rules" ]; then
  pass "${operator_cmd[*]} rbac ($(grep -c 'verbs' "$rbac_rules" || true) rules)"
else
  cat "$WORK/rbac.err" >&2
  fail "${operator_cmd[*]} rbac did not print the operator's RBAC rules"
  rbac_rules=""
fi

# values files: "default" plus every ci/*-values.yaml
value_sets=(default)
for f in "$CHART"/ci/*-values.yaml; do value_sets+=("$f"); done

for vs in "${value_sets[@]}"; do
  if [ "$vs" = default ]; then vflags=(); label="default values"; else vflags=(-f "$vs"); label="$vs"; fi
  section "helm: $label"
  if helm lint --strict "$CHART" "${vflags[@]}" >"$WORK/lint.out" 2>&1; then
    pass "helm lint --strict"
  else
    cat "$WORK/lint.out"; fail "helm lint --strict ($label)"
  fi
  rendered="$WORK/rendered.yaml"
  if ! helm template "$RELEASE" "$CHART" -n "$RELEASE_NS" "${vflags[@]}" >"$rendered" 2>"$WORK/template.err"; then
    cat "$WORK/template.err"; fail "helm template ($label)"; continue
  fi
  pass "helm template"
  split="$WORK/split-$(basename "$vs" .yaml)"
  mapfile -t manifests < <("$PY" scripts/lib/split_docs.py "$rendered" "$split" --exclude-kind ServiceMonitor | cut -f1)
  for v in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$v" "${manifests[@]}" >"$WORK/kv.out" 2>&1 \
       && ! grep -q "Couldn't find schema" "$WORK/kv.out"; then
      pass "kubernetes-validate --strict -k $v: ${#manifests[@]} objects"
    else
      cat "$WORK/kv.out"; fail "kubernetes-validate --strict -k $v ($label)"
    fi
  done
  n_sm="$(find "$split/excluded" -name '*ServiceMonitor*' | wc -l)"
  if [ "$n_sm" -gt 0 ]; then
    echo "  note  $n_sm ServiceMonitor (CRD kind, no official schema) skipped by kubernetes-validate; checked by chart_assert.py"
  fi
  if "$PY" scripts/lib/chart_assert.py "$CHART" "$rendered" "$RELEASE_NS" "${vflags[@]:1}"; then
    pass "chart assertions (flags from values, rollout strategy, downward-API env, probes, security context, labels, RBAC layout, metrics, PDB)"
  else
    fail "chart assertions ($label)"
  fi
  # The operator binary must accept exactly the arguments the chart renders.
  mapfile -t dep_args < <("$PY" -c '
import sys, yaml
for o in yaml.safe_load_all(open(sys.argv[1])):
    if o and o.get("kind") == "Deployment":
        c = next(c for c in o["spec"]["template"]["spec"]["containers"] if c["name"] == "operator")
        print("\n".join(c.get("args", [])))' "$rendered")
  if [ ${#dep_args[@]} -gt 0 ] && "${operator_cmd[@]}" "${dep_args[@]}" --help >/dev/null 2>"$WORK/args.err"; then
    pass "the operator accepts the rendered args: ${dep_args[*]}"
  else
    cat "$WORK/args.err"; fail "the operator rejects the rendered args: ${dep_args[*]}"
  fi
  if grep -q '^kind: ClusterRole$' "$rendered"; then
    if [ -n "$rbac_rules" ]; then
      if "$PY" scripts/lib/rbac_compare.py "$rendered" "$rbac_rules"; then
        pass "RBAC granted == RBAC the operator needs"
      else
        fail "RBAC granted != RBAC the operator needs ($label)"
      fi
    fi
  else
    echo "  note  rbac.create=false: no RBAC rendered, nothing to compare"
  fi
done

section "packaged chart"
if helm package "$CHART" -d "$WORK/pkg" >/dev/null 2>"$WORK/pkg.err"; then
  pkg="$(ls "$WORK"/pkg/*.tgz)"
  contents="$(tar -tzf "$pkg")"
  if grep -q '/crds/drasistatestores.drasi.io.yaml$' <<<"$contents" \
     && grep -q '/crds/drasistatestorebackups.drasi.io.yaml$' <<<"$contents" \
     && ! grep -q '/ci/' <<<"$contents" \
     && helm template "$RELEASE" "$pkg" -n "$RELEASE_NS" >/dev/null 2>"$WORK/pkg.err"; then
    pass "helm package: $(basename "$pkg") holds the CRD, leaves out ci/, and renders"
  else
    cat "$WORK/pkg.err"; fail "the packaged chart $(basename "$pkg") is incomplete or does not render"
  fi
else
  cat "$WORK/pkg.err"; fail "helm package"
fi

section "values that violate values.schema.json must be rejected"
shopt -s nullglob
invalid=("$CHART"/ci/invalid/*.yaml)
shopt -u nullglob
[ ${#invalid[@]} -gt 0 ] || fail "no files in $CHART/ci/invalid"
for f in "${invalid[@]}"; do
  if helm template "$RELEASE" "$CHART" -n "$RELEASE_NS" -f "$f" >/dev/null 2>"$WORK/invalid.err"; then
    fail "$f was accepted (it must violate values.schema.json)"
  elif grep -q "values don't meet the specifications of the schema" "$WORK/invalid.err"; then
    pass "rejected $f: $(grep -m1 -- "- at " "$WORK/invalid.err" | sed 's/^ *- //')"
  else
    cat "$WORK/invalid.err"; fail "$f failed, but not on values.schema.json"
  fi
done

echo
if [ "$failed" -ne 0 ]; then
  echo "check-chart: FAILED"
  exit 1
fi
echo "check-chart: all checks passed"
