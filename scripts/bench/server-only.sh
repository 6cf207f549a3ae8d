#!/usr/bin/env bash
# Measures the store server alone, driven by wrk (a small C load generator)
# instead of the Rust client, so that the server's capacity can be told apart
# from the client's cost in docs/benchmarks.md. Loopback only; bounded runs.
#   scripts/bench/server-only.sh [seconds-per-run]
# Needs wrk (Debian package `wrk`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
secs="${1:-5}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --locked -q -p drasi-store-server --bin drasi-store-server
data=$(mktemp -d)
log="$data/server.log"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
target/release/drasi-store-server --insecure-no-auth --listen 127.0.0.1:0 \
  --data-dir "$data/db" --durability immediate --log-format text 2>"$log" &
pid=$!
for _ in $(seq 100); do
  addr=$(grep -o 'addr=[0-9.:]*' "$log" | head -1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start:" >&2; cat "$log" >&2; exit 1; }
base="http://$addr"

groups() { curl -s "$base/metrics" | awk '/^drasi_store_commit_group_size_(sum|count) /{print $2}' | paste -sd' '; }
run() {
  local name=$1; shift
  local before after
  before=$(groups)
  echo "== $name"
  wrk -t1 -d"${secs}s" --latency "$@" | grep -E 'Requests/sec|  50%|  99%|Non-2xx|Socket errors' || true
  after=$(groups)
  read -r s0 c0 <<<"$before"; read -r s1 c1 <<<"$after"
  awk -v s="$s1" -v s0="$s0" -v c="$c1" -v c0="$c0" \
    'BEGIN { if (c > c0) printf "   commits: %d, writes per commit: %.1f\n", c - c0, (s - s0) / (c - c0) }'
}

curl -s -X PUT --data-binary '0123456789abcdef' "$base/v1/kv?store=bench&key=k5" -o /dev/null
run "durable set, 64 connections" -c64 -s scripts/bench/wrk-put.lua "$base"
run "durable set, 1 connection" -c1 -s scripts/bench/wrk-put.lua "$base"
run "get, 64 connections" -c64 "$base/v1/kv?store=bench&key=k5"
run "get, 1 connection" -c1 "$base/v1/kv?store=bench&key=k5"
