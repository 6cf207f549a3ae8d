#!/usr/bin/env bash
# Where a remote durable `set` spends its CPU: runs the benchmark's remote
# `set` workloads (c=1 and c=64, 16-byte values, durability immediate) under
# `perf record` (cpu-clock samples of the benchmark process, its provider
# I/O runtime and its server child) and prints a breakdown by thread and by
# component. Needs `perf` (Debian: linux-perf) and a release build:
#
#   cargo build --release -p drasi-store-tests --example bench
#   scripts/bench/profile-remote-set.sh [--no-batching] [seconds]
#
# Output: target/profile/<workload>[-no-batching].{data,md,txt}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

extra=()
suffix=""
if [ "${1:-}" = "--no-batching" ]; then
  extra=(--no-batching)
  suffix="-no-batching"
  shift
fi
seconds="${1:-3}"
bin=target/release/examples/bench
[ -x "$bin" ] || { echo "build it first: cargo build --release -p drasi-store-tests --example bench" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not found (Debian: apt-get install linux-perf)" >&2; exit 2; }
out=target/profile
mkdir -p "$out"

for workload in "set c=1 16B" "set c=64 16B"; do
  tag="$(echo "$workload" | tr ' =' '__')$suffix"
  echo "==> $workload$suffix" >&2
  perf record -q -F 999 -g -o "$out/$tag.data" -- \
    "$bin" --remote-only --no-redis --rss-stores 0 --warmup-secs 0.5 \
    --duration-secs "$seconds" --only "$workload" "${extra[@]}" >"$out/$tag.md"
  perf report -i "$out/$tag.data" --no-children --sort comm,dso,sym --stdio \
    --percent-limit 0 -g none 2>/dev/null >"$out/$tag.txt"
  python3 scripts/bench/perf-breakdown.py "$out/$tag.txt"
  grep -E "^\| set c=" "$out/$tag.md" || true
done
