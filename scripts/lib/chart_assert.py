#!/usr/bin/env python3
"""Assert what a rendering of the chart must contain for its values.

usage: chart_assert.py CHART_DIR RENDERED.yaml RELEASE_NAMESPACE [VALUES.yaml ...]

The values are the chart's values.yaml merged with the given files (the same
order as `helm template -f`). Checks the behaviour the chart promises: the
operator flags derived from values (--leader-elect when replicas > 1, ...),
the downward-API env, probes on 8080, the restricted security context,
standard labels, RBAC layout per mode, the metrics Service / ServiceMonitor /
PodDisruptionBudget wiring. Prints what it checked; exit status 1 on failure.
"""
import sys

import yaml

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def main():
    chart, rendered, release_ns, *files = sys.argv[1:]
    with open(f"{chart}/values.yaml") as f:
        values = yaml.safe_load(f)
    for path in files:
        with open(path) as f:
            values = merge(values, yaml.safe_load(f) or {})
    with open(f"{chart}/Chart.yaml") as f:
        chart_meta = yaml.safe_load(f)
    with open(rendered) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]

    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)

    # Labels on everything.
    for o in objs:
        labels = o["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            check(key in labels, f"{o['kind']}/{o['metadata']['name']} lacks label {key}")

    deps = by_kind.get("Deployment", [])
    check(len(deps) == 1, f"expected 1 Deployment, got {len(deps)}")
    dep = deps[0]
    replicas = int(values["replicaCount"])
    check(dep["spec"]["replicas"] == replicas, "Deployment replicas != replicaCount")
    check(dep["metadata"].get("namespace") == release_ns, "Deployment not in the release namespace")
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for k, v in dep["spec"]["selector"]["matchLabels"].items():
        check(pod_labels.get(k) == v, f"Deployment selector {k} does not match the pod labels")
    for k, v in (values.get("podLabels") or {}).items():
        check(pod_labels.get(k) == v, f"podLabels {k} missing on the pod")
    for k, v in (values.get("podAnnotations") or {}).items():
        check(dep["spec"]["template"]["metadata"].get("annotations", {}).get(k) == v,
              f"podAnnotations {k} missing on the pod")
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        if values.get(key):
            check(pod.get(key) == values[key], f"{key} not passed to the pod")
    if values.get("priorityClassName"):
        check(pod.get("priorityClassName") == values["priorityClassName"], "priorityClassName not passed")
    if values.get("imagePullSecrets"):
        check(pod.get("imagePullSecrets") == values["imagePullSecrets"], "imagePullSecrets not passed")

    c = next((c for c in pod["containers"] if c["name"] == "operator"), None)
    check(c is not None, "no container named operator")
    if c is None:
        return finish()
    tag = values["image"]["tag"] or chart_meta["appVersion"]
    check(c["image"] == f"{values['image']['repository']}:{tag}", f"unexpected image {c['image']}")
    check(c["imagePullPolicy"] == values["image"]["pullPolicy"], "imagePullPolicy not passed")
    args = c.get("args", [])
    check(args[:1] == ["run"], "args do not start with the run subcommand")
    server_image = values["serverImage"] or f"ghcr.io/drasi-project/drasi-store-server:{chart_meta['appVersion']}"
    check(f"--server-image={server_image}" in args, "--server-image missing or wrong")
    check(f"--log-format={values['logFormat']}" in args, "--log-format missing or wrong")
    check("--metrics-addr=0.0.0.0:8080" in args, "--metrics-addr=0.0.0.0:8080 missing")
    wn = values.get("watchNamespace") or ""
    check((f"--watch-namespace={wn}" in args) == bool(wn), "--watch-namespace does not follow watchNamespace")
    check(not any(a.startswith("--watch-namespace") for a in args) or wn, "--watch-namespace set without value")
    check(("--manage-crd" in args) == bool(values["manageCrd"]), "--manage-crd does not follow manageCrd")
    leader = replicas > 1 or values["leaderElection"]["enabled"]
    check(("--leader-elect" in args) == leader, f"--leader-elect must be {'on' if leader else 'off'}")
    strategy = (dep["spec"].get("strategy") or {}).get("type")
    check(strategy == ("RollingUpdate" if leader else "Recreate"),
          f"Deployment strategy must be {'RollingUpdate' if leader else 'Recreate'} (leader election {'on' if leader else 'off'})")
    env = {e["name"]: e for e in c.get("env", [])}
    for name, path in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")):
        check(env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == path,
              f"env {name} must come from the downward API ({path})")
    for e in values.get("extraEnv") or []:
        check(env.get(e["name"]) == e, f"extraEnv {e['name']} not passed")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("metrics") == 8080, "container port 8080 named metrics missing")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        check(get.get("path") == path and get.get("port") in ("metrics", 8080), f"{probe} must GET {path} on 8080")
    if values.get("resources"):
        check(c.get("resources") == values["resources"], "resources not passed")

    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot not set")
    check((csc.get("runAsUser") or psc.get("runAsUser")) == 65532, "runAsUser is not 65532")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem not true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation not false")
    check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), "capabilities do not drop ALL")
    check(((csc.get("seccompProfile") or psc.get("seccompProfile")) or {}).get("type") == "RuntimeDefault",
          "seccompProfile is not RuntimeDefault")

    # ServiceAccount.
    sa_name = pod.get("serviceAccountName")
    sas = [o["metadata"]["name"] for o in by_kind.get("ServiceAccount", [])]
    if values["serviceAccount"]["create"]:
        check(sas == [sa_name], f"ServiceAccount {sa_name} not rendered")
    else:
        check(not sas, "ServiceAccount rendered although serviceAccount.create=false")

    # RBAC layout per mode.
    if values["rbac"]["create"]:
        roles = by_kind.get("Role", [])
        role_ns = {r["metadata"]["namespace"] for r in roles}
        if wn:
            check(wn in role_ns, f"no Role in the watched namespace {wn}")
            for cr in by_kind.get("ClusterRole", []):
                for rule in cr.get("rules") or []:
                    check(not set(rule.get("resources", [])) & {"secrets", "statefulsets", "services",
                                                                  "persistentvolumeclaims", "drasistatestores"},
                          "namespaced mode, but the ClusterRole grants namespaced resources")
        else:
            check(wn not in role_ns and all(r["metadata"]["namespace"] == release_ns for r in roles),
                  "cluster mode renders Roles outside the release namespace")
        check((release_ns in role_ns) == leader, "leader-election Role must exist exactly when leader election is on")
        for b in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
            for s in b["subjects"]:
                check(s["kind"] == "ServiceAccount" and s["name"] == sa_name and s["namespace"] == release_ns,
                      f"{b['kind']} {b['metadata']['name']} binds something other than the operator ServiceAccount")
    else:
        check(not any(k in by_kind for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")),
              "RBAC rendered although rbac.create=false")

    # Metrics Service and ServiceMonitor.
    svcs = by_kind.get("Service", [])
    if values["metrics"]["service"]["enabled"]:
        check(len(svcs) == 1, "metrics Service missing")
        svc = svcs[0]
        port = svc["spec"]["ports"][0]
        check(port["name"] == "metrics" and port["port"] == 8080, "metrics Service must expose 8080 named metrics")
        for k, v in svc["spec"]["selector"].items():
            check(pod_labels.get(k) == v, "metrics Service selector does not match the pod")
        sms = by_kind.get("ServiceMonitor", [])
        if values["metrics"]["serviceMonitor"]["enabled"]:
            check(len(sms) == 1, "ServiceMonitor missing")
            sm = sms[0]
            check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
            for k, v in sm["spec"]["selector"]["matchLabels"].items():
                check(svc["metadata"]["labels"].get(k) == v, "ServiceMonitor selector does not match the Service")
            check(release_ns in sm["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor namespaceSelector")
            ep = sm["spec"]["endpoints"][0]
            check(ep["port"] == "metrics" and ep["path"] == "/metrics", "ServiceMonitor endpoint")
            check(ep["interval"] == values["metrics"]["serviceMonitor"]["interval"], "ServiceMonitor interval")
            for k, v in (values["metrics"]["serviceMonitor"].get("labels") or {}).items():
                check(sm["metadata"]["labels"].get(k) == v, f"ServiceMonitor label {k}")
        else:
            check(not sms, "ServiceMonitor rendered although disabled")
    else:
        check(not svcs, "metrics Service rendered although disabled")

    # PodDisruptionBudget only with more than one replica.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    want_pdb = values["podDisruptionBudget"]["enabled"] and replicas > 1
    check(len(pdbs) == (1 if want_pdb else 0), f"PodDisruptionBudget must {'' if want_pdb else 'not '}be rendered")
    for pdb in pdbs:
        for k, v in pdb["spec"]["selector"]["matchLabels"].items():
            check(pod_labels.get(k) == v, "PodDisruptionBudget selector does not match the pod")

    return finish()


def finish():
    if failures:
        for f in failures:
            print(f"    FAIL: {f}")
        sys.exit(1)


if __name__ == "__main__":
    main()
