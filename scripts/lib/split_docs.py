#!/usr/bin/env python3
"""Split multi-document YAML into one JSON or YAML file per object.

usage: split_docs.py IN.yaml OUT_DIR [--exclude-kind KIND ...] [--only-kind KIND ...] [--json]

Writes OUT_DIR/NNN-<kind>-<name>.(yaml|json) for every non-empty document
(List objects are flattened) and prints one line per file:
"<path>\t<apiVersion>\t<kind>\t<name>". Excluded objects are written to
OUT_DIR/excluded/ so the caller can check them by other means.
"""
import argparse
import json
import os
import re
import sys

import yaml


def objects(stream):
    for doc in yaml.safe_load_all(stream):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SystemExit(f"split_docs: a YAML document is not an object: {doc!r}")
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            yield from doc["items"]
        else:
            yield doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("out_dir")
    ap.add_argument("--exclude-kind", action="append", default=[])
    ap.add_argument("--only-kind", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with open(a.input) if a.input != "-" else sys.stdin as f:
        objs = list(objects(f))
    os.makedirs(os.path.join(a.out_dir, "excluded"), exist_ok=True)
    ext = "json" if a.json else "yaml"
    for i, obj in enumerate(objs):
        kind = str(obj.get("kind", "unknown"))
        name = str((obj.get("metadata") or {}).get("name", "unnamed"))
        excluded = kind in a.exclude_kind or (a.only_kind and kind not in a.only_kind)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{i:03d}-{kind}-{name}")
        path = os.path.join(a.out_dir, "excluded" if excluded else "", f"{safe}.{ext}")
        with open(path, "w") as out:
            if a.json:
                json.dump(obj, out, indent=1)
            else:
                yaml.safe_dump(obj, out, sort_keys=False)
        if not excluded:
            print(f"{path}\t{obj.get('apiVersion', '')}\t{kind}\t{name}")


if __name__ == "__main__":
    main()
