#!/usr/bin/env python3
"""Turn a CRD's openAPIV3Schema into a JSON Schema check-jsonschema can use.

usage: crd_schema.py CRD.yaml OUT.json [--version v1alpha1]

Kubernetes structural schemas are OpenAPI v3 with extensions; JSON Schema
validators differ in a few places, rewritten here so a CR is judged the way
the API server (with kubectl's default strict field validation) judges it:
  * `nullable: true` -> the type also admits null (and enum admits null);
  * `x-kubernetes-int-or-string: true` -> integer or string;
  * objects with `properties` and neither `additionalProperties` nor
    `x-kubernetes-preserve-unknown-fields` reject unknown fields (the API
    server rejects them under strict field validation);
  * the root requires apiVersion/kind/metadata.name and pins the group
    version and kind.
Not checked (needs an API server): CEL rules (`x-kubernetes-validations`),
list-type/map-keys uniqueness semantics, and defaulting.
"""
import argparse
import json

import yaml


def rewrite(node):
    if isinstance(node, list):
        return [rewrite(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: rewrite(v) for k, v in node.items()}
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    if node.pop("nullable", False):
        if "type" in node:
            t = node["type"]
            node["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("crd")
    ap.add_argument("out")
    ap.add_argument("--version", default=None, help="CRD version (default: the storage version)")
    a = ap.parse_args()
    with open(a.crd) as f:
        crd = yaml.safe_load(f)
    if crd.get("kind") != "CustomResourceDefinition":
        raise SystemExit(f"crd_schema: {a.crd} is not a CustomResourceDefinition")
    versions = crd["spec"]["versions"]
    if a.version:
        ver = next((v for v in versions if v["name"] == a.version), None)
    else:
        ver = next((v for v in versions if v.get("storage")), versions[0])
    if ver is None:
        raise SystemExit(f"crd_schema: version {a.version} not in the CRD")
    schema = rewrite(ver["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": f"{group}/{ver['name']}"}
    props["kind"] = {"const": kind}
    meta = dict(props.get("metadata") or {"type": "object"})
    meta.setdefault("properties", {})["name"] = {
        "type": "string", "minLength": 1, "maxLength": 253,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
    meta["required"] = sorted(set(meta.get("required", [])) | {"name"})
    props["metadata"] = meta
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema.setdefault("title", f"{kind} {group}/{ver['name']}")
    with open(a.out, "w") as f:
        json.dump(schema, f, indent=1)
    print(f"{group}/{ver['name']} {kind}")


if __name__ == "__main__":
    main()
