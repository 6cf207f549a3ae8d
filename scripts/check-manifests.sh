#!/usr/bin/env bash
# Checks what the operator produces and the sample custom resources, offline.
# Run by .ci/run after scripts/install-tools.sh; uses only .tools/bin.
#
# usage: scripts/check-manifests.sh [path/to/drasi-store-operator]
#   Without an argument the operator is run via `cargo run`.
#
# Checks, each must pass:
#   1. `drasi-store-operator crd --name N` validates with `kubernetes-validate
#      --strict` (Kubernetes 1.25 and 1.37 schemas) and equals crds/N.yaml,
#      for every CRD in crds/ (DrasiStateStore, DrasiStateStoreBackup,
#      DrasiStateStoreScheduledBackup)
#   2. for every DrasiStateStore sample (examples/*.yaml and the chart's
#      examples/*.yaml): `drasi-store-operator render -f` succeeds and every
#      object it prints validates with `kubernetes-validate --strict`; every
#      kind the operator creates (Secret, Service, StatefulSet, the optional
#      NetworkPolicy and a replicated store's PodDisruptionBudget) is
#      rendered by at least one sample (examples/replicated.yaml renders
#      every object of a 3-replica store)
#   3. every sample DrasiStateStore (and DrasiStateStoreBackup and
#      DrasiStateStoreScheduledBackup, each against its own CRD) validates
#      against the CRD's own
#      openAPIV3Schema with check-jsonschema (schema extracted by
#      scripts/lib/crd_schema.py); other objects in the sample files and the
#      consumer examples (examples/consumer/*.yaml) validate with
#      kubernetes-validate --strict
#   4. the backup Jobs the operator builds (the snapshots of
#      operator/tests/backup_job.rs) validate with kubernetes-validate --strict
#   5. every tests/fixtures/invalid-crs/*.yaml is REJECTED by that schema.
#      check-jsonschema cannot evaluate CEL rules (x-kubernetes-validations)
#      or transition rules (oldSelf): a fixture that only a CEL rule rejects
#      must say so with a line `# rejected-by: cel`; it is listed and skipped
#      here; operator/tests/crd_cel.rs executes the CEL rules against them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS_BIN="${TOOLS_DIR:-$ROOT/.tools}/bin"
K8S_VERSIONS=(1.25.0 1.37.0)
CRD_FILE=crds/drasistatestores.drasi.io.yaml
BACKUP_CRD_FILE=crds/drasistatestorebackups.drasi.io.yaml
SCHEDULE_CRD_FILE=crds/drasistatestorescheduledbackups.drasi.io.yaml

for t in kubernetes-validate check-jsonschema tools-python; do
  if [ ! -x "$TOOLS_BIN/$t" ]; then
    echo "check-manifests: $TOOLS_BIN/$t missing: run scripts/install-tools.sh first" >&2
    exit 2
  fi
done
export PATH="$TOOLS_BIN:$PATH"
PY="$TOOLS_BIN/tools-python"

if [ $# -ge 1 ]; then
  operator=("$1")
else
  operator=(cargo run -q --locked -p drasi-store-operator --)
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
pass() { printf '  PASS  %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failed=1; }
section() { printf '\n-- %s\n' "$*"; }

# kube_validate LABEL FILE...: kubernetes-validate --strict against every
# version in K8S_VERSIONS; an object whose kind has no official schema fails.
kube_validate() {
  local label="$1"; shift
  local v
  for v in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$v" "$@" >"$WORK/kv.out" 2>&1 \
       && ! grep -q "Couldn't find schema" "$WORK/kv.out"; then
      pass "kubernetes-validate --strict -k $v: $label ($# objects)"
    else
      cat "$WORK/kv.out"
      fail "kubernetes-validate --strict -k $v: $label"
    fi
  done
}

shopt -s nullglob
crd_files=(crds/*.yaml)
shopt -u nullglob
for expected in "$CRD_FILE" "$BACKUP_CRD_FILE" "$SCHEDULE_CRD_FILE"; do
  [ -f "$expected" ] || fail "$expected is missing (generate it with \`crd --name $(basename "$expected" .yaml)\`)"
done
for crd_file in "${crd_files[@]}"; do
  crd_name="$(basename "$crd_file" .yaml)"
  section "CRD $crd_name (${operator[*]} crd --name $crd_name)"
  if "${operator[@]}" crd --name "$crd_name" >"$WORK/crd.yaml" 2>"$WORK/crd.err" && [ -s "$WORK/crd.yaml" ]; then
    pass "${operator[*]} crd --name $crd_name"
    kube_validate "CustomResourceDefinition $crd_name" "$WORK/crd.yaml"
    if cmp -s "$WORK/crd.yaml" "$crd_file"; then
      pass "$crd_file is the current output of \`crd --name $crd_name\`"
    else
      fail "$crd_file differs from \`${operator[*]} crd --name $crd_name\` (regenerate it)"
    fi
  else
    cat "$WORK/crd.err" >&2
    fail "${operator[*]} crd --name $crd_name"
  fi
done

section "CRD openAPIV3Schema -> JSON Schema"
schema="$WORK/drasistatestore.schema.json"
if [ -f "$CRD_FILE" ] && gv="$("$PY" scripts/lib/crd_schema.py "$CRD_FILE" "$schema")"; then
  pass "extracted the $gv schema from $CRD_FILE (nullable and int-or-string rewritten, unknown fields rejected)"
  echo "  note  check-jsonschema does not evaluate CEL rules (x-kubernetes-validations); see tests/fixtures/invalid-crs"
else
  fail "could not extract the schema from $CRD_FILE"
  schema=""
fi
backup_schema="$WORK/drasistatestorebackup.schema.json"
if gv="$("$PY" scripts/lib/crd_schema.py "$BACKUP_CRD_FILE" "$backup_schema")"; then
  pass "extracted the $gv schema from $BACKUP_CRD_FILE"
else
  fail "could not extract the schema from $BACKUP_CRD_FILE"
  backup_schema=""
fi
schedule_schema="$WORK/drasistatestorescheduledbackup.schema.json"
if gv="$("$PY" scripts/lib/crd_schema.py "$SCHEDULE_CRD_FILE" "$schedule_schema")"; then
  pass "extracted the $gv schema from $SCHEDULE_CRD_FILE"
else
  fail "could not extract the schema from $SCHEDULE_CRD_FILE"
  schedule_schema=""
fi
n_schedules=0

section "sample DrasiStateStores: render + kubernetes-validate, schema"
shopt -s nullglob
samples=(examples/*.yaml examples/backup/*.yaml charts/drasi-store-operator/examples/*.yaml)
consumer=(examples/consumer/*.yaml)
invalid=(tests/fixtures/invalid-crs/*.yaml)
shopt -u nullglob
n_dss=0
for f in "${samples[@]}"; do
  out="$WORK/sample-$(echo "$f" | tr '/' '_')"
  mkdir -p "$out"
  mapfile -t dss < <("$PY" scripts/lib/split_docs.py "$f" "$out/dss" --only-kind DrasiStateStore | cut -f1)
  mapfile -t backups < <("$PY" scripts/lib/split_docs.py "$f" "$out/backup" --only-kind DrasiStateStoreBackup | cut -f1)
  mapfile -t schedules < <("$PY" scripts/lib/split_docs.py "$f" "$out/schedule" --only-kind DrasiStateStoreScheduledBackup | cut -f1)
  mapfile -t others < <("$PY" scripts/lib/split_docs.py "$f" "$out/other" --exclude-kind DrasiStateStore --exclude-kind DrasiStateStoreBackup --exclude-kind DrasiStateStoreScheduledBackup | cut -f1)
  for d in "${schedules[@]}"; do
    n_schedules=$((n_schedules + 1))
    if [ -n "$schedule_schema" ] && check-jsonschema --schemafile "$schedule_schema" "$d" >"$WORK/cj.out" 2>&1; then
      pass "$f: $(basename "$d" .yaml) matches the DrasiStateStoreScheduledBackup CRD schema"
    else
      cat "$WORK/cj.out" 2>/dev/null; fail "$f: $(basename "$d" .yaml) does not match the DrasiStateStoreScheduledBackup CRD schema"
    fi
  done
  for d in "${backups[@]}"; do
    if [ -n "$backup_schema" ] && check-jsonschema --schemafile "$backup_schema" "$d" >"$WORK/cj.out" 2>&1; then
      pass "$f: $(basename "$d" .yaml) matches the DrasiStateStoreBackup CRD schema"
    else
      cat "$WORK/cj.out" 2>/dev/null; fail "$f: $(basename "$d" .yaml) does not match the DrasiStateStoreBackup CRD schema"
    fi
  done
  if [ ${#dss[@]} -eq 0 ]; then
    echo "  note  $f holds no DrasiStateStore"
  fi
  if [ ${#others[@]} -gt 0 ]; then
    kube_validate "$f (non-DrasiStateStore objects)" "${others[@]}"
  fi
  for d in "${dss[@]}"; do
    n_dss=$((n_dss + 1))
    name="$(basename "$d" .yaml)"
    if [ -n "$schema" ]; then
      if check-jsonschema --schemafile "$schema" "$d" >"$WORK/cj.out" 2>&1; then
        pass "$f: $name matches the CRD schema"
      else
        cat "$WORK/cj.out"; fail "$f: $name does not match the CRD schema"
      fi
    fi
    if "${operator[@]}" render -f "$d" >"$out/$name.rendered.yaml" 2>"$WORK/render.err"; then
      mapfile -t objs < <("$PY" scripts/lib/split_docs.py "$out/$name.rendered.yaml" "$out/$name.objects" | cut -f1)
      if [ ${#objs[@]} -eq 0 ]; then
        fail "$f: render -f printed no objects"
      else
        pass "$f: render -f printed ${#objs[@]} objects ($("$PY" scripts/lib/split_docs.py "$out/$name.rendered.yaml" "$WORK/kinds" | cut -f3 | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}'))"
        kube_validate "$f: rendered objects" "${objs[@]}"
      fi
    else
      cat "$WORK/render.err"; fail "$f: ${operator[*]} render -f failed"
    fi
  done
done
if [ "$n_dss" -eq 0 ]; then
  fail "no DrasiStateStore samples found in examples/*.yaml"
fi
if [ "$n_schedules" -eq 0 ]; then
  fail "no DrasiStateStoreScheduledBackup sample found in examples/backup/*.yaml"
fi
# Every kind the operator can create must have been rendered (and so
# validated above) from at least one sample.
for kind in Secret Service StatefulSet NetworkPolicy PodDisruptionBudget; do
  if grep -qx "kind: $kind" "$WORK"/sample-*/*.rendered.yaml 2>/dev/null; then
    pass "some sample renders a $kind"
  else
    fail "no sample renders a $kind: add one to examples/ so it is validated"
  fi
done

section "backup Jobs (the builder's snapshots, operator/tests/backup_job.rs)"
# The operator creates backup Jobs at run time only; the Job builder's insta
# snapshots are exactly what it applies, so they are validated here.
shopt -s nullglob
job_snaps=(operator/tests/snapshots/backup_job__*.snap)
shopt -u nullglob
if [ ${#job_snaps[@]} -eq 0 ]; then
  fail "no backup Job snapshots in operator/tests/snapshots/"
fi
job_docs=()
for snap in "${job_snaps[@]}"; do
  doc="$WORK/$(basename "$snap" .snap).yaml"
  # Drop insta's header (the lines up to its second `---`).
  awk 'seen >= 2 { print } /^---$/ { seen++ }' "$snap" >"$doc"
  if grep -qx 'kind: Job' "$doc"; then
    job_docs+=("$doc")
  else
    fail "$snap holds no Job"
  fi
done
if [ ${#job_docs[@]} -gt 0 ]; then
  kube_validate "backup Jobs" "${job_docs[@]}"
fi

section "consumer examples"
if [ ${#consumer[@]} -gt 0 ]; then
  mapfile -t objs < <(for f in "${consumer[@]}"; do "$PY" scripts/lib/split_docs.py "$f" "$WORK/consumer/$(basename "$f" .yaml)" | cut -f1; done)
  kube_validate "examples/consumer" "${objs[@]}"
else
  fail "examples/consumer/*.yaml missing"
fi

section "invalid DrasiStateStores must be rejected by the CRD schema"
if [ ${#invalid[@]} -eq 0 ]; then
  fail "no fixtures in tests/fixtures/invalid-crs/"
fi
for f in "${invalid[@]}"; do
  if grep -qE '^#[[:space:]]*rejected-by:[[:space:]]*cel' "$f"; then
    echo "  skip  $f: rejected only by a CEL rule (executed by operator/tests/crd_cel.rs)"
    continue
  fi
  [ -n "$schema" ] || { fail "$f: no schema to check against"; continue; }
  out="$WORK/invalid-$(basename "$f" .yaml)"
  mapfile -t docs < <("$PY" scripts/lib/split_docs.py "$f" "$out" | cut -f1)
  if [ ${#docs[@]} -ne 1 ]; then
    fail "$f: expected exactly one object, found ${#docs[@]}"
    continue
  fi
  if check-jsonschema --schemafile "$schema" "${docs[0]}" >"$WORK/cj.out" 2>&1; then
    fail "$f was ACCEPTED by the CRD schema (it must be rejected)"
  elif grep -q "Schema validation errors were encountered" "$WORK/cj.out"; then
    pass "rejected $f: $(grep -m1 -F '::' "$WORK/cj.out" | sed -E 's/^[[:space:]]*[^[:space:]]*::[$]?//' | cut -c1-160)"
  else
    cat "$WORK/cj.out"; fail "$f: check-jsonschema failed for another reason than a schema violation"
  fi
done

echo
if [ "$failed" -ne 0 ]; then
  echo "check-manifests: FAILED"
  exit 1
fi
echo "check-manifests: all checks passed"
