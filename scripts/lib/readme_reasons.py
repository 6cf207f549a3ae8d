#!/usr/bin/env python3
"""README's troubleshooting table must explain every condition reason the
operator defines (operator/src/controller/status.rs, `pub mod reasons`), and
nothing the operator does not define.

usage: readme_reasons.py README.md operator/src/controller/status.rs
"""
import re
import sys


def main():
    readme, status_rs = sys.argv[1], sys.argv[2]
    src = open(status_rs).read()
    m = re.search(r"pub mod reasons \{(.*?)\n\}", src, re.S)
    if not m:
        raise SystemExit(f"readme_reasons: no `pub mod reasons` block in {status_rs}")
    defined = set(re.findall(r'pub const \w+: &str = "([^"]+)";', m.group(1)))
    text = open(readme).read()
    section = text.split("## Troubleshooting", 1)[-1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        if re.match(r"^\| (Ready|Progressing|Degraded)=(True|False) \|", line):
            cell = line.split("|")[2]
            documented |= set(re.findall(r"`([A-Za-z]+)`", cell))
    missing = sorted(defined - documented)
    unknown = sorted(documented - defined)
    for r in missing:
        print(f"    README troubleshooting table lacks the reason {r}")
    for r in unknown:
        print(f"    README troubleshooting table explains {r}, which the operator does not define")
    if missing or unknown:
        sys.exit(1)
    print(f"{len(defined)} reasons")


if __name__ == "__main__":
    main()
