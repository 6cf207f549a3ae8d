#!/usr/bin/env python3
"""Compare the RBAC a rendered chart grants with what the operator needs.

usage: rbac_compare.py RENDERED_CHART.yaml OPERATOR_RBAC.yaml

OPERATOR_RBAC.yaml is the output of `drasi-store-operator rbac`: a YAML list
of PolicyRules (a ClusterRole object or several documents are accepted too).

The chart must grant every (apiGroup, resource, verb) the operator lists to
the operator's ServiceAccount, in the scope the rendered Deployment runs with:
  * namespaced resources: cluster-wide, or in --watch-namespace when set;
  * leases (coordination.k8s.io): in --leader-election-namespace, and only
    required when the Deployment passes --leader-elect;
  * customresourcedefinitions: only required when it passes --manage-crd;
  * cluster-scoped resources: from a ClusterRole bound by a ClusterRoleBinding.
A grant limited by resourceNames counts for a requirement without names only
where the operator touches exactly one object whose name the chart knows (the
Lease, the DrasiStateStore CRD, the watched Namespace) and the verb is not
create/list/watch/deletecollection (which resourceNames cannot restrict).

Anything granted beyond the operator's list is reported and is an error too:
the chart is meant to be least privilege. Exit status 1 on any finding.
"""
import sys
from collections import defaultdict

import yaml

CRD_NAME = "drasistatestores.drasi.io"
CLUSTER_SCOPED = {
    ("", "namespaces"), ("", "nodes"), ("", "persistentvolumes"),
    ("storage.k8s.io", "storageclasses"), ("storage.k8s.io", "csidrivers"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
}
UNNARROWABLE_VERBS = {"create", "list", "watch", "deletecollection"}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def operator_rules(path):
    rules = []
    for doc in load_all(path):
        if isinstance(doc, list):
            rules.extend(doc)
        elif isinstance(doc, dict) and "rules" in doc:
            rules.extend(doc["rules"] or [])
        elif isinstance(doc, dict) and ("verbs" in doc):
            rules.append(doc)
        else:
            raise SystemExit(f"rbac_compare: cannot read rules from {path}: {str(doc)[:200]}")
    return rules


def expand(rule):
    if rule.get("nonResourceURLs"):
        raise SystemExit(f"rbac_compare: nonResourceURLs are not expected: {rule}")
    names = tuple(sorted(rule.get("resourceNames") or ())) or None
    for g in rule.get("apiGroups") or [""]:
        for r in rule.get("resources") or []:
            for v in rule.get("verbs") or []:
                yield (g, r, v, names)


def base(resource):
    return resource.split("/", 1)[0]


def main():
    rendered, rbac_out = sys.argv[1], sys.argv[2]
    objs = load_all(rendered)
    deployments = [o for o in objs if o.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise SystemExit(f"rbac_compare: expected one Deployment, found {len(deployments)}")
    dep = deployments[0]
    release_ns = dep["metadata"].get("namespace", "default")
    pod = dep["spec"]["template"]["spec"]
    sa = pod.get("serviceAccountName", "default")
    container = next(c for c in pod["containers"] if c["name"] == "operator")
    args = container.get("args", [])

    def arg_value(flag, default=None):
        for i, a in enumerate(args):
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
            if a == flag and i + 1 < len(args) and not args[i + 1].startswith("--"):
                return args[i + 1]
        return default

    watch_ns = arg_value("--watch-namespace")
    leader = "--leader-elect" in args
    manage_crd = "--manage-crd" in args
    lease_ns = arg_value("--leader-election-namespace", release_ns)
    lease_name = arg_value("--leader-election-lease", "drasi-store-operator-leader")

    known_names = {("coordination.k8s.io", "leases"): lease_name,
                   ("apiextensions.k8s.io", "customresourcedefinitions"): CRD_NAME}
    if watch_ns:
        known_names[("", "namespaces")] = watch_ns

    # --- what the chart grants to the operator's ServiceAccount -------------
    roles = {}
    for o in objs:
        if o.get("kind") in ("ClusterRole", "Role"):
            ns = o["metadata"].get("namespace") if o["kind"] == "Role" else None
            roles[(o["kind"], ns, o["metadata"]["name"])] = o.get("rules") or []
    grants = []  # (group, resource, verb, names, scope) scope "*" = cluster-wide
    for o in objs:
        kind = o.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                   and s.get("namespace", release_ns) == release_ns for s in o.get("subjects") or []):
            continue
        ref = o["roleRef"]
        ns = o["metadata"].get("namespace") if kind == "RoleBinding" else None
        key = (ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])
        if key not in roles:
            raise SystemExit(f"rbac_compare: {kind} {o['metadata']['name']} refers to missing {key}")
        scope = "*" if kind == "ClusterRoleBinding" else ns
        for rule in roles[key]:
            for g, r, v, names in expand(rule):
                grants.append((g, r, v, names, scope))

    # --- what the operator needs, in the scope this rendering runs with -----
    required = []
    skipped = []
    for rule in operator_rules(rbac_out):
        for g, r, v, names in expand(rule):
            gr = (g, base(r))
            if gr == ("coordination.k8s.io", "leases"):
                if not leader:
                    skipped.append((g, r, v, "leader election off"))
                    continue
                scope = lease_ns
            elif gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
                if not manage_crd:
                    skipped.append((g, r, v, "manageCrd off"))
                    continue
                scope = "*"
            elif gr in CLUSTER_SCOPED:
                scope = "*"
            else:
                scope = watch_ns or "*"
            required.append((g, r, v, names, scope))

    def covers(grant, req):
        g, r, v, names, scope = grant
        rg, rr, rv, rnames, rscope = req
        if g not in (rg, "*") or r not in (rr, "*") or v not in (rv, "*"):
            return None
        cluster_scoped = (rg, base(rr)) in CLUSTER_SCOPED
        if scope != "*" and (cluster_scoped or scope != rscope):
            return None
        if names is None:
            return "ok"
        if rnames is not None:
            return "ok" if set(rnames) <= set(names) else None
        known = known_names.get((rg, base(rr)))
        if known is not None and names == (known,) and rv not in UNNARROWABLE_VERBS:
            return f"narrowed to resourceNames [{known}]"
        return None

    missing, notes = [], defaultdict(list)
    for req in required:
        verdicts = [covers(gr, req) for gr in grants]
        hits = [x for x in verdicts if x]
        if not hits:
            missing.append(req)
        elif "ok" not in hits:
            notes[hits[0]].append(req)

    extra = []
    needed = {(g, r, v) for g, r, v, _, _ in required}
    for g, r, v, names, scope in grants:
        if (g, r, v) not in needed:
            extra.append((g, r, v, names, scope))

    def fmt(t):
        g, r, v = t[0], t[1], t[2]
        s = f"{g or 'core'}/{r} {v}"
        if len(t) > 3 and t[3]:
            s += f" names={list(t[3])}"
        if len(t) > 4:
            s += f" scope={'cluster' if t[4] == '*' else 'namespace ' + str(t[4])}"
        return s

    mode = f"watch-namespace={watch_ns or '(all)'} leader-elect={leader} manage-crd={manage_crd}"
    print(f"  rbac: {mode}: operator needs {len(required)} permissions here, chart grants {len(grants)}")
    for note, reqs in notes.items():
        for req in reqs:
            print(f"    note: {fmt(req)} granted {note}")
    for s in skipped:
        print(f"    not needed in this mode: {s[0] or 'core'}/{s[1]} {s[2]} ({s[3]})")
    for m in missing:
        print(f"    MISSING: the operator needs {fmt(m)}")
    for e in sorted(set(extra), key=str):
        print(f"    EXTRA: the chart grants {fmt(e)} which `drasi-store-operator rbac` does not list")
    if missing or extra:
        sys.exit(1)


if __name__ == "__main__":
    main()
