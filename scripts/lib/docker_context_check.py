#!/usr/bin/env python3
"""Check that the Docker build context (after .dockerignore) can build the images.

usage: docker_context_check.py [REPO_ROOT]

No Docker engine runs in CI, so `docker build` cannot catch a .dockerignore
that drops something the release build needs. This check emulates the
context: every git-tracked file minus the .dockerignore patterns (Docker's
rules: patterns relative to the root, `*`/`?` within one path segment, `**`
across segments, a leading `!` re-includes, a matched directory excludes
its contents, last match wins), then requires:
  * Cargo.toml, Cargo.lock and every workspace member's Cargo.toml and src/;
  * every file an `include_str!`/`include_bytes!`/`include!` in those crates'
    non-test sources (src/, build.rs) refers to, resolved like rustc does,
    relative to the including file (`env!("CARGO_MANIFEST_DIR")` too).
Exit status 1 with the offending paths otherwise.
"""
import os
import re
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = None


def patterns(root):
    out = []
    with open(os.path.join(root, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            p = line[1:] if neg else line
            p = os.path.normpath(p.lstrip("/")).replace(os.sep, "/")
            out.append((neg, to_regex(p)))
    return out


def to_regex(p):
    rx, i = "", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            rx += "(?:.*/)?"
            i += 3
            continue
        if p.startswith("**", i):
            rx += ".*"
            i += 2
            continue
        rx += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    # A pattern matching a directory excludes everything below it.
    return re.compile(f"^{rx}(?:/.*)?$")


def excluded(path, pats):
    state = False
    for neg, rx in pats:
        if rx.match(path):
            state = not neg
    return state


def workspace_members(root):
    text = open(os.path.join(root, "Cargo.toml")).read()
    if tomllib:
        return tomllib.loads(text)["workspace"]["members"]
    m = re.search(r"members\s*=\s*\[(.*?)\]", text, re.S)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


INCLUDE = re.compile(r'include(?:_str|_bytes)?!\s*\(\s*(concat!\s*\(\s*env!\s*\(\s*"CARGO_MANIFEST_DIR"\s*\)\s*,\s*)?"([^"]+)"')


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    try:
        files = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               check=True, capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (e.g. a source tarball): every file on disk.
        files = [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                 for d, _, fs in os.walk(root) for f in fs]
    pats = patterns(root)
    files = [f for f in files if f and os.path.isfile(os.path.join(root, f))]
    context = {f for f in files if not excluded(f, pats)}
    problems = []

    def need(path, why):
        if path not in context:
            problems.append(f"{path} ({why}) is not in the Docker build context")

    need("Cargo.toml", "workspace manifest")
    need("Cargo.lock", "--locked build")
    # The binaries built by the Dockerfile, and what they depend on, are
    # all workspace members; `cargo build -p` resolves the whole workspace.
    members = workspace_members(root)
    for m in members:
        need(f"{m}/Cargo.toml", "workspace member")
        if not any(f.startswith(f"{m}/src/") for f in context):
            problems.append(f"{m}/src/ is not in the Docker build context")
    scanned = 0
    for m in members:
        for f in sorted(context):
            if not (f.startswith(f"{m}/src/") or f == f"{m}/build.rs") or not f.endswith(".rs"):
                continue
            scanned += 1
            text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
            for manifest_rel, target in INCLUDE.findall(text):
                base = m if manifest_rel else os.path.dirname(f)
                resolved = os.path.normpath(os.path.join(base, target)).replace(os.sep, "/")
                need(resolved, f"included by {f}")
    if problems:
        for p in problems:
            print(f"    {p}")
        sys.exit(1)
    print(f"{len(context)} of {len(files)} files in the context; {len(members)} workspace members, "
          f"{scanned} Rust sources scanned for include_str!/include_bytes!/include!")


if __name__ == "__main__":
    main()
