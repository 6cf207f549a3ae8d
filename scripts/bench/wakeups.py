#!/usr/bin/env python3
"""Reads `perf sched timehist -w` output of one concurrency-1 benchmark run
(or of wrk against the server alone) and prints

- wake-ups per call between the threads on a call's path: the caller (the
  benchmark's tokio workers, or wrk), the provider's I/O runtime, the
  server's HTTP workers and its writer thread;
- for the remote provider, the median time of each leg of a call, from one
  cross-thread wake-up to the next: caller -> provider -> (socket) server
  [-> writer -> server] -> (socket) provider -> caller.

A thread waking a thread of the same role (e.g. one tokio worker waking its
sibling) is counted too: on a call's path those are wake-ups nothing needed.

    perf sched timehist -i perf.data -w | scripts/bench/wakeups.py CALLS
"""
import re
import statistics
import sys
from collections import Counter

LINE = re.compile(r"\s*([\d.]+) \[\d+\]\s+(\S+?)\[\d+.*awakened: (\S+?)\[\d+")


def role(comm):
    # perf shows the first 15 bytes of a thread's name.
    if comm.startswith("drasi-store-wri"):
        return "writer"
    if comm.startswith("drasi-store"):
        return "server"
    if comm.startswith("drasi-state-sto"):
        return "provider"
    if comm.startswith("tokio-rt-worker") or comm.startswith("wrk"):
        return "caller"
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: wakeups.py CALLS < timehist-output")
    calls = int(sys.argv[1])
    if calls <= 0:
        sys.exit("CALLS must be positive")
    pairs = Counter()
    events = []
    io_wakes = 0
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        waker, wakee = role(m.group(2)), role(m.group(3))
        if wakee == "writer" and waker is None:
            io_wakes += 1  # disk completions arrive in interrupt context
        if waker and wakee:
            pairs[(waker, wakee)] += 1
            if waker != wakee:
                events.append((float(m.group(1)), waker[0] + wakee[0]))
    print(f"| wake-up | per call |\n|---|---:|")
    for (a, b), n in sorted(pairs.items()):
        print(f"| {a} -> {b} | {n / calls:.2f} |")
    print(f"| interrupt (disk completion, seen only when it lands on a busy CPU) -> writer | {io_wakes / calls:.2f} |")
    print(f"| **total** | {(sum(pairs.values()) + io_wakes) / calls:.2f} |")

    # c = caller, p = provider, s = server, w = writer. A call runs from
    # one "caller wakes the provider" to the next; a leg whose thread was
    # still awake (no wake-up needed) is simply absent from that call.
    order = ["cp", "ps", "sw", "ws", "sp", "pc"]
    names = {
        "cp": "caller wakes the provider's runtime",
        "ps": "request reaches a server worker",
        "sw": "server worker wakes the writer",
        "ws": "writer answers the server worker",
        "sp": "response reaches the provider's runtime",
        "pc": "provider wakes the caller",
    }
    calls_seen, cur = [], None
    for t, kind in events:
        if kind == "cp":
            if cur is not None:
                cur["next"] = t
                calls_seen.append(cur)
            cur = {"cp": t}
        elif cur is not None and kind in order and kind not in cur:
            cur[kind] = t
    legs = {}
    for call in calls_seen:
        present = [k for k in order if k in call] + ["next"]
        for a, b in zip(present, present[1:]):
            legs.setdefault((a, b), []).append(call[b] - call[a])
    if not calls_seen:
        return
    print(f"\n{len(calls_seen)} calls; median time of each leg (and how many calls had it):\n")
    print("| from | to | calls | median |\n|---|---|---:|---:|")
    rank = {k: i for i, k in enumerate(order + ["next"])}
    for (a, b), ds in sorted(legs.items(), key=lambda kv: (rank[kv[0][0]], rank[kv[0][1]])):
        if len(ds) * 20 < len(calls_seen):
            continue  # rarer than 1 call in 20: noise
        to = "the caller's next call wakes the provider" if b == "next" else names[b]
        print(f"| {names[a]} | {to} | {len(ds)} | {statistics.median(ds) * 1e6:.0f} µs |")
    whole = [c["next"] - c["cp"] for c in calls_seen]
    print(f"| **one call** | | {len(whole)} | {statistics.median(whole) * 1e6:.0f} µs |")

if __name__ == "__main__":
    main()
