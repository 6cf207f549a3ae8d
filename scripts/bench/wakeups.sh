#!/usr/bin/env bash
# Counts the thread wake-ups on the path of a concurrency-1 call through
# RemoteStateStoreProvider and times each leg between them, with
# `perf sched` (scheduler trace points: needs root or perf_event_paranoid
# <= -1, and tracefs mounted at /sys/kernel/tracing). Bounded, loopback only:
#
#   cargo build --release -p drasi-store-tests --example bench
#   scripts/bench/wakeups.sh ["set c=1 16B"|"get c=1 16B"] [seconds]
#
# Output: the bench row, then scripts/bench/wakeups.py's tables. The trace is
# kept in target/profile/wakeups.data. perf's own trace points slow every
# wake-up a little: compare legs with each other, not with untraced runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
workload="${1:-set c=1 16B}"
seconds="${2:-1}"
warmup=0.1
bin=target/release/examples/bench
[ -x "$bin" ] || { echo "build it first: cargo build --release -p drasi-store-tests --example bench" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not found (Debian: apt-get install linux-perf)" >&2; exit 2; }
out=target/profile
mkdir -p "$out"
perf sched record -q -a -o "$out/wakeups.data" -- \
  "$bin" --remote-only --no-redis --rss-stores 0 --warmup-secs "$warmup" \
  --duration-secs "$seconds" --only "$workload" >"$out/wakeups.md" 2>/dev/null
row=$(grep -F "| $workload | remote" "$out/wakeups.md") || { echo "no result row for $workload" >&2; exit 1; }
echo "$row"
# Calls during warm-up and measurement, from the measured throughput.
calls=$(awk -F'|' -v s="$seconds" -v w="$warmup" '{
  t = $4; gsub(/ /, "", t); m = 1
  if (t ~ /k$/) { m = 1000; sub(/k$/, "", t) } else if (t ~ /M$/) { m = 1000000; sub(/M$/, "", t) }
  printf "%d", t * m * (s + w) }' <<<"$row")
perf sched timehist -i "$out/wakeups.data" -w 2>/dev/null | python3 scripts/bench/wakeups.py "$calls"
