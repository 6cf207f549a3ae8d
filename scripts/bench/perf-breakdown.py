#!/usr/bin/env python3
"""Buckets a `perf report --no-children --sort comm,dso,sym` text dump of a
remote `set` benchmark into the components of one request: the benchmark
tasks, the provider's I/O runtime, the server's HTTP workers, the writer
thread's redb apply and its fsync, and the kernel's loopback networking and
scheduling (the thread hops)."""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s+([\d.]+)%\s+(\S.*?)\s{2,}(\S+)\s+\[([.kH])\]\s+(.*)$")


def component(comm, dso, kind, sym):
    kernel = kind == "k"
    if comm.startswith("drasi-store-wri"):
        if kernel and re.search(r"fsync|ext4|jbd2|blk|virtio|submit_bio|filemap|iomap|bio_|wait_on_page|folio", sym):
            return "server: writer fsync (kernel)"
        if kernel:
            return "server: writer other kernel"
        return "server: writer redb apply + commit (user)"
    if kernel and re.search(r"tcp|inet|sock|skb|ip_|loopback|net_rx|netif|__dev_queue|napi|sys_sendto|sys_recvfrom|sendmsg|recvmsg", sym):
        return "kernel: loopback TCP (both ends)"
    # In a VM without a PMU, perf samples with the cpu-clock timer, so time
    # spent with interrupts off surfaces where they are turned back on:
    # `_raw_spin_unlock_irq[restore]`, whose callers are almost all
    # try_to_wake_up (futex, socket and eventfd wake-ups) and the context
    # switch back into a woken thread (checked with `perf report -G`).
    if kernel and re.search(r"futex|schedule|wake|try_to_wake|enqueue|dequeue|switch|epoll|ep_|pick_next|finish_task|_raw_spin_unlock_irq", sym):
        return "kernel: thread wake-ups / scheduling (runtime hops)"
    if kernel:
        return "kernel: other (syscalls, memory)"
    if re.search(r"hyper|h2::|http::|httparse|reqwest|axum|tower", sym):
        return "user: HTTP (hyper/reqwest/axum)"
    if re.search(r"tokio::runtime|tokio::sync|parking|crossbeam|std::sync::mpmc|std::sync::mpsc", sym):
        return "user: tokio scheduler / channels (runtime hops)"
    if re.search(r"redb::", sym):
        return "user: redb (outside the writer)"
    if re.search(r"malloc|free|realloc|memcpy|memmove|_int_|cfree", sym):
        return "user: allocation / memcpy"
    return "user: other"


def main(path):
    by_comm = defaultdict(float)
    by_component = defaultdict(float)
    total = 0.0
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        pct, comm, dso, kind, sym = m.groups()
        pct = float(pct)
        total += pct
        by_comm[comm.strip()] += pct
        by_component[component(comm.strip(), dso, kind, sym)] += pct
    print(f"{path}: {total:.1f}% of samples classified")
    print("| thread | share of CPU samples |\n|---|---:|")
    for comm, pct in sorted(by_comm.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {comm} | {pct:.1f}% |")
    print("\n| component | share of CPU samples |\n|---|---:|")
    for comp, pct in sorted(by_component.items(), key=lambda kv: -kv[1]):
        print(f"| {comp} | {pct:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
