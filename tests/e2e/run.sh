#!/usr/bin/env bash
# Opt-in end-to-end test on a real Kubernetes cluster (kind, k3d, or any
# cluster your kubeconfig points at). Never run by CI: it needs a cluster and
# a Docker engine.
#
# What it does:
#   1. builds both images from the repo's Dockerfile (unless E2E_BUILD_IMAGES=0)
#      and loads them into kind/k3d when KIND_CLUSTER / K3D_CLUSTER is set;
#   2. helm-installs charts/drasi-store-operator into $OPERATOR_NAMESPACE;
#   3. applies a DrasiStateStore in $E2E_NAMESPACE, waits for condition Ready,
#      and checks the connection Secret's keys;
#   4. runs a Job (curl image) that loads the connection Secret with envFrom and
#      writes a value through the store's Service with the bearer token, then
#      reads it back; also checks that a request without the token is refused;
#   5. deletes the store pod, waits for it to come back Ready, and reads the
#      value again with a second Job: the data survived on the PersistentVolume;
#   5b. backs the store up with a DrasiStateStoreBackup to a volume destination
#      (the PVC e2e-backups) and checks the backup Completed with one record
#      and a SHA-256;
#   6. deletes the DrasiStateStore and checks the finalizer ran and the PVC was
#      retained (pvcRetention.whenDeleted defaults to Retain);
#   6b. creates a new store from the deleted store's backup
#      (spec.restore.fromBackup), waits for Ready, reads the value through its
#      own connection Secret, restarts its pod and checks the restore init
#      container skipped the second time;
#   6c. creates a 3-replica store, writes a value, changes its pod template
#      and checks the rollout: every replica restarted onto the new template,
#      followers first (ReplicaRestarted), then the leader after it handed
#      leadership over (LeadershipHandedOver); the value is still there;
#   7. cleans up (helm uninstall, namespaces), unless E2E_KEEP=1.
#
# Usage:
#   kind create cluster --name drasi-e2e
#   KIND_CLUSTER=drasi-e2e tests/e2e/run.sh
#
# Environment:
#   KUBECONFIG / current context  the cluster to use (required)
#   KIND_CLUSTER        kind cluster name: `kind load docker-image` the images
#   K3D_CLUSTER         k3d cluster name: `k3d image import` the images
#   E2E_BUILD_IMAGES    1 (default): docker build both images; 0: use the
#                       images below as they are (they must be pullable)
#   OPERATOR_IMAGE      operator image (default drasi-store-operator:e2e-<time>)
#   SERVER_IMAGE        store server image (default drasi-store-server:e2e-<time>)
#   CURL_IMAGE          image with curl and sh (default curlimages/curl:8.11.1)
#   OPERATOR_NAMESPACE  where the chart goes (default drasi-e2e-system)
#   E2E_NAMESPACE       where the store goes (default drasi-e2e)
#   STORAGE_CLASS       storageClassName for the store (default: cluster default)
#   E2E_TIMEOUT         timeout of each wait (default 300s)
#   E2E_KEEP            1: leave everything installed for inspection
#   HELM_EXTRA_ARGS     extra arguments for `helm install` (word-split)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
[ -d "$ROOT/.tools/bin" ] && export PATH="$ROOT/.tools/bin:$PATH"

RUN_ID="$(date +%Y%m%d%H%M%S)"
E2E_BUILD_IMAGES="${E2E_BUILD_IMAGES:-1}"
if [ "$E2E_BUILD_IMAGES" != 1 ] && { [ -z "${OPERATOR_IMAGE:-}" ] || [ -z "${SERVER_IMAGE:-}" ]; }; then
  echo "[e2e] E2E_BUILD_IMAGES=$E2E_BUILD_IMAGES: set OPERATOR_IMAGE and SERVER_IMAGE to existing images" >&2
  exit 2
fi
OPERATOR_IMAGE="${OPERATOR_IMAGE:-drasi-store-operator:e2e-$RUN_ID}"
SERVER_IMAGE="${SERVER_IMAGE:-drasi-store-server:e2e-$RUN_ID}"
CURL_IMAGE="${CURL_IMAGE:-curlimages/curl:8.11.1}"
OPERATOR_NAMESPACE="${OPERATOR_NAMESPACE:-drasi-e2e-system}"
E2E_NAMESPACE="${E2E_NAMESPACE:-drasi-e2e}"
E2E_TIMEOUT="${E2E_TIMEOUT:-300s}"
RELEASE=drasi-store-operator
STORE=e2e-store
STORE_ID="e2e/$RUN_ID"
KEY="checkpoint ü/%?#"        # exercises percent-encoding end to end
VALUE="value-$RUN_ID-$RANDOM"

log() { printf '\n[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\n[e2e] FAILED: %s\n' "$*" >&2; exit 1; }
# Applies the YAML on stdin, whose last block is a storage request, with
# storageClassName appended at indent $1 when STORAGE_CLASS is set.
apply_ending_in_storage() {
  {
    cat
    [ -n "${STORAGE_CLASS:-}" ] && printf '%sstorageClassName: %s\n' "$1" "$STORAGE_CLASS"
    true
  } | kubectl apply -n "$E2E_NAMESPACE" -f -
}
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required (scripts/install-tools.sh installs helm and kubectl into .tools/bin)"; }

need kubectl
need helm
kubectl version >/dev/null 2>&1 || die "no reachable cluster: set KUBECONFIG or the current context"

diagnostics() {
  log "diagnostics"
  kubectl get dss,statefulset,pod,svc,secret,pvc -n "$E2E_NAMESPACE" -o wide 2>&1 || true
  kubectl describe dss "$STORE" -n "$E2E_NAMESPACE" 2>&1 | tail -40 || true
  kubectl get events -n "$E2E_NAMESPACE" --sort-by=.lastTimestamp 2>&1 | tail -30 || true
  kubectl logs -n "$E2E_NAMESPACE" "$STORE-0" --tail=50 2>&1 || true
  kubectl logs -n "$OPERATOR_NAMESPACE" "deployment/$RELEASE" --tail=100 2>&1 || true
}

cleanup() {
  local rc=$?
  [ "$rc" -ne 0 ] && diagnostics
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "E2E_KEEP=1: leaving namespaces $E2E_NAMESPACE and $OPERATOR_NAMESPACE in place"
  else
    log "cleanup"
    kubectl delete dss --all -n "$E2E_NAMESPACE" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    kubectl delete namespace "$E2E_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    helm uninstall "$RELEASE" -n "$OPERATOR_NAMESPACE" --wait >/dev/null 2>&1 || true
    kubectl delete namespace "$OPERATOR_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if [ "$rc" -eq 0 ]; then log "PASSED"; else log "FAILED (exit $rc)"; fi
}
trap cleanup EXIT

# --- 1. images ----------------------------------------------------------------
if [ "$E2E_BUILD_IMAGES" = 1 ]; then
  need docker
  log "building $SERVER_IMAGE and $OPERATOR_IMAGE"
  DOCKER_BUILDKIT=1 docker build --target store-server -t "$SERVER_IMAGE" "$ROOT"
  DOCKER_BUILDKIT=1 docker build --target operator -t "$OPERATOR_IMAGE" "$ROOT"
fi
if [ -n "${KIND_CLUSTER:-}" ]; then
  need kind
  log "loading images into kind cluster $KIND_CLUSTER"
  kind load docker-image --name "$KIND_CLUSTER" "$SERVER_IMAGE" "$OPERATOR_IMAGE"
elif [ -n "${K3D_CLUSTER:-}" ]; then
  need k3d
  log "importing images into k3d cluster $K3D_CLUSTER"
  k3d image import -c "$K3D_CLUSTER" "$SERVER_IMAGE" "$OPERATOR_IMAGE"
fi

# --- 2. operator --------------------------------------------------------------
log "helm install $RELEASE into $OPERATOR_NAMESPACE"
op_repo="${OPERATOR_IMAGE%:*}"
op_tag="${OPERATOR_IMAGE##*:}"
[ "$op_repo" != "$OPERATOR_IMAGE" ] || die "OPERATOR_IMAGE must be repository:tag"
# shellcheck disable=SC2086 # HELM_EXTRA_ARGS is word-split on purpose
helm upgrade --install "$RELEASE" charts/drasi-store-operator \
  -n "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository="$op_repo" --set image.tag="$op_tag" \
  --set image.pullPolicy=IfNotPresent \
  --set serverImage="$SERVER_IMAGE" \
  --set logFormat=text \
  --wait --timeout "$E2E_TIMEOUT" ${HELM_EXTRA_ARGS:-}
kubectl get crd drasistatestores.drasi.io >/dev/null || die "the DrasiStateStore CRD is not installed"
metrics="$(kubectl get --raw "/api/v1/namespaces/$OPERATOR_NAMESPACE/services/$RELEASE-metrics:metrics/proxy/metrics")" \
  || die "the operator's /metrics is not served through its metrics Service"
grep -q '^drasi_store_operator_' <<<"$metrics" || die "the operator's /metrics has no drasi_store_operator_* series"
echo "operator is up; its /metrics answers through service/$RELEASE-metrics"

# --- 3. a store -----------------------------------------------------------------
log "creating DrasiStateStore $STORE in $E2E_NAMESPACE"
kubectl create namespace "$E2E_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The volume backups go to (step 5b).
apply_ending_in_storage '  ' <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: e2e-backups
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 256Mi
YAML
apply_ending_in_storage '    ' <<YAML
apiVersion: drasi.io/v1alpha1
kind: DrasiStateStore
metadata:
  name: $STORE
spec:
  backup:
    destinations:
      - name: volume
        volume:
          claimName: e2e-backups
          path: e2e
  storage:
    size: 256Mi
YAML
kubectl wait --for=condition=Ready "dss/$STORE" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
kubectl get dss -n "$E2E_NAMESPACE"
for k in DRASI_STATE_STORE_URL DRASI_STATE_STORE_TOKEN; do
  v="$(kubectl get secret "$STORE-connection" -n "$E2E_NAMESPACE" -o "jsonpath={.data.$k}")"
  [ -n "$v" ] || die "Secret $STORE-connection has no key $k"
done
url="$(kubectl get secret "$STORE-connection" -n "$E2E_NAMESPACE" -o 'jsonpath={.data.DRASI_STATE_STORE_URL}' | base64 -d)"
[ "$url" = "http://$STORE.$E2E_NAMESPACE.svc:7070" ] || die "unexpected DRASI_STATE_STORE_URL $url"
echo "connection Secret $STORE-connection: URL $url and a token"

# run_job NAME SCRIPT [STORE]: runs SCRIPT with sh in $CURL_IMAGE, with the
# connection Secret of STORE (default $STORE) as environment (exactly how a
# DrasiLib pod consumes it), and waits.
# The script travels in a ConfigMap, so Kubernetes' $(VAR) expansion of
# command/env never touches it.
run_job() {
  local name="$1" script="$2" store="${3:-$STORE}"
  kubectl delete job "$name" -n "$E2E_NAMESPACE" --ignore-not-found --wait=true >/dev/null
  kubectl create configmap "$name" -n "$E2E_NAMESPACE" --from-literal=run.sh="$script" \
    --from-literal=store="$STORE_ID" --from-literal=key="$KEY" --from-literal=value="$VALUE" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply -n "$E2E_NAMESPACE" -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata:
  name: $name
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 120
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 100
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: curl
          image: $CURL_IMAGE
          command: ["sh", "-eu", "/e2e/run.sh"]
          envFrom:
            - secretRef:
                name: $store-connection
          volumeMounts:
            - {name: e2e, mountPath: /e2e, readOnly: true}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
      volumes:
        - name: e2e
          configMap:
            name: $name
YAML
  local deadline=$((SECONDS + 180)) succeeded failed
  while :; do
    succeeded="$(kubectl get job "$name" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.succeeded}')"
    failed="$(kubectl get job "$name" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.failed}')"
    [ "${succeeded:-0}" -ge 1 ] && break
    if [ "${failed:-0}" -ge 1 ] || [ $SECONDS -ge $deadline ]; then
      kubectl logs -n "$E2E_NAMESPACE" "job/$name" 2>&1 || true
      die "Job $name did not succeed"
    fi
    sleep 2
  done
  kubectl logs -n "$E2E_NAMESPACE" "job/$name"
}

# The client side of the query-string API (docs/protocol.md): store and key are
# percent-encoded query parameters (curl --url-query encodes them); values are
# the raw request/response body. Runs inside the Job's pod.
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
PRELUDE='store=$(cat /e2e/store); key=$(cat /e2e/key); value=$(cat /e2e/value)
kv() { curl -fsS --url-query "store=$store" --url-query "key=$key" "$@" "$DRASI_STATE_STORE_URL/v1/kv"; }
auth="Authorization: Bearer $DRASI_STATE_STORE_TOKEN"
'

# --- 4. write and read through the Service --------------------------------------
log "writing and reading through service/$STORE with the token from the connection Secret"
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
run_job e2e-write "$PRELUDE"'
code=$(curl -sS -o /dev/null -w "%{http_code}" --url-query "store=$store" --url-query "key=$key" \
  -X PUT --data-binary "$value" "$DRASI_STATE_STORE_URL/v1/kv")
[ "$code" = 401 ] || { echo "PUT without a token answered $code, want 401"; exit 1; }
echo "PUT without a token: 401 as expected"
kv -X PUT -H "$auth" -H "Content-Type: application/octet-stream" --data-binary "$value"
got=$(kv -H "$auth")
[ "$got" = "$value" ] || { echo "read back \"$got\", want \"$value\""; exit 1; }
echo "wrote and read back $value"'

# --- 5. the data survives the pod ------------------------------------------------
log "deleting pod $STORE-0; the value must survive"
old_uid="$(kubectl get pod "$STORE-0" -n "$E2E_NAMESPACE" -o 'jsonpath={.metadata.uid}')"
kubectl delete pod "$STORE-0" -n "$E2E_NAMESPACE" --wait=true --timeout="$E2E_TIMEOUT"
deadline=$((SECONDS + 180))
until new_uid="$(kubectl get pod "$STORE-0" -n "$E2E_NAMESPACE" -o 'jsonpath={.metadata.uid}' 2>/dev/null)" \
      && [ -n "$new_uid" ] && [ "$new_uid" != "$old_uid" ]; do
  [ $SECONDS -lt $deadline ] || die "pod $STORE-0 was not re-created"
  sleep 2
done
kubectl wait --for=condition=Ready "pod/$STORE-0" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
kubectl wait --for=condition=Ready "dss/$STORE" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
run_job e2e-read "$PRELUDE"'
got=$(kv --retry 10 --retry-all-errors --retry-delay 2 -H "$auth")
[ "$got" = "$value" ] || { echo "after the restart read \"$got\", want \"$value\""; exit 1; }
echo "after the pod restart the value is still $value"'

# --- 5b. a backup ----------------------------------------------------------------
log "backing up $STORE with a DrasiStateStoreBackup"
kubectl apply -n "$E2E_NAMESPACE" -f - <<YAML
apiVersion: drasi.io/v1alpha1
kind: DrasiStateStoreBackup
metadata:
  name: $STORE-e2e
spec:
  store: $STORE
YAML
if ! kubectl wait --for=jsonpath='{.status.phase}'=Completed "dssbackup/$STORE-e2e" \
     -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"; then
  kubectl get dssbackup "$STORE-e2e" -n "$E2E_NAMESPACE" -o yaml || true
  die "DrasiStateStoreBackup $STORE-e2e did not complete"
fi
records="$(kubectl get dssbackup "$STORE-e2e" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.records}')"
sha="$(kubectl get dssbackup "$STORE-e2e" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.sha256}')"
location="$(kubectl get dssbackup "$STORE-e2e" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.location}')"
[ "$records" = 1 ] || die "backup $STORE-e2e holds $records records, want 1"
[ ${#sha} -eq 64 ] || die "backup $STORE-e2e has no SHA-256 ($sha)"
[ "$location" = "pvc://e2e-backups/e2e/$E2E_NAMESPACE/$STORE/$STORE-e2e.snap" ] \
  || die "unexpected backup location $location"
echo "backup $STORE-e2e: $records record, sha256 $sha at $location"

# --- 6. deletion honours pvcRetention -------------------------------------------
log "deleting DrasiStateStore $STORE (pvcRetention.whenDeleted: Retain)"
kubectl delete dss "$STORE" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
deadline=$((SECONDS + 180))
while kubectl get statefulset "$STORE" -n "$E2E_NAMESPACE" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || die "StatefulSet $STORE still exists after the DrasiStateStore was deleted"
  sleep 2
done
kubectl get pvc "data-$STORE-0" -n "$E2E_NAMESPACE" >/dev/null \
  || die "PVC data-$STORE-0 was deleted although pvcRetention.whenDeleted is Retain"
echo "StatefulSet garbage-collected, PVC data-$STORE-0 retained"

# --- 6b. restore the deleted store's backup into a new store ---------------------
RESTORED="$STORE-restored"
log "the backup outlived its store: creating DrasiStateStore $RESTORED with spec.restore.fromBackup $STORE-e2e"
apply_ending_in_storage '    ' <<YAML
apiVersion: drasi.io/v1alpha1
kind: DrasiStateStore
metadata:
  name: $RESTORED
spec:
  restore:
    fromBackup: $STORE-e2e
  storage:
    size: 256Mi
YAML
if ! kubectl wait --for=condition=Ready "dss/$RESTORED" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"; then
  kubectl get dss "$RESTORED" -n "$E2E_NAMESPACE" -o yaml || true
  kubectl logs -n "$E2E_NAMESPACE" "pod/$RESTORED-0" -c restore 2>&1 || true
  die "DrasiStateStore $RESTORED did not become Ready"
fi
restored_from="$(kubectl get dss "$RESTORED" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.restoredFrom.location}')"
[ "$restored_from" = "$location" ] \
  || die "$RESTORED records restoredFrom.location '$restored_from', want $location"
kubectl logs -n "$E2E_NAMESPACE" "pod/$RESTORED-0" -c restore
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
run_job e2e-read-restored "$PRELUDE"'
got=$(kv --retry 10 --retry-all-errors --retry-delay 2 -H "$auth")
[ "$got" = "$value" ] || { echo "the restored store has \"$got\", want \"$value\""; exit 1; }
echo "the restored store serves $value"' "$RESTORED"
# A restart must not restore again over the live data: the init container
# finds the database and skips.
kubectl delete pod "$RESTORED-0" -n "$E2E_NAMESPACE" --wait=true --timeout="$E2E_TIMEOUT"
kubectl wait --for=condition=Ready "dss/$RESTORED" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
deadline=$((SECONDS + 180))
until kubectl logs -n "$E2E_NAMESPACE" "pod/$RESTORED-0" -c restore 2>/dev/null | grep -q 'restore skipped'; do
  [ $SECONDS -lt $deadline ] || die "the restarted $RESTORED-0 did not skip the restore"
  sleep 2
done
echo "restored store $RESTORED: Ready, serves the value, and a restart skips the restore"

# --- 6c. a replicated store rolls a new template, the leader last ------------------
REPLICATED="$STORE-replicated"
log "creating DrasiStateStore $REPLICATED with 3 replicas"
apply_ending_in_storage '    ' <<YAML
apiVersion: drasi.io/v1alpha1
kind: DrasiStateStore
metadata:
  name: $REPLICATED
spec:
  replicas: 3
  storage:
    size: 256Mi
YAML
kubectl wait --for=condition=Ready "dss/$REPLICATED" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
kubectl wait --for=condition=ReplicationHealthy "dss/$REPLICATED" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
leader="$(kubectl get dss "$REPLICATED" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.replication.leader}')"
[ -n "$leader" ] || die "$REPLICATED reports no leader"
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
run_job e2e-write-replicated "$PRELUDE"'
kv --retry 10 --retry-all-errors --retry-delay 2 -X PUT -H "$auth" \
  -H "Content-Type: application/octet-stream" --data-binary "$value"
echo "wrote $value to the replicated store"' "$REPLICATED"
old_revision="$(kubectl get statefulset "$REPLICATED" -n "$E2E_NAMESPACE" -o 'jsonpath={.status.updateRevision}')"
log "changing $REPLICATED's pod template (leader $leader): the operator restarts followers first, the leader last"
kubectl patch dss "$REPLICATED" -n "$E2E_NAMESPACE" --type merge \
  -p "{\"spec\":{\"pod\":{\"annotations\":{\"e2e.drasi.io/rollout\":\"$RUN_ID\"}}}}"
deadline=$((SECONDS + 600))
while :; do
  sts="$(kubectl get statefulset "$REPLICATED" -n "$E2E_NAMESPACE" \
    -o 'jsonpath={.status.updateRevision} {.status.updatedReplicas} {.status.readyReplicas}')"
  read -r revision updated ready <<<"$sts"
  [ "$revision" != "$old_revision" ] && [ "${updated:-0}" = 3 ] && [ "${ready:-0}" = 3 ] && break
  [ $SECONDS -lt $deadline ] || die "the rollout of $REPLICATED did not finish: $sts"
  sleep 5
done
events() {
  kubectl get events -n "$E2E_NAMESPACE" \
    --field-selector "involvedObject.name=$REPLICATED,reason=$1" \
    --sort-by=.metadata.creationTimestamp -o 'jsonpath={range .items[*]}{.metadata.creationTimestamp} {.message}{"\n"}{end}'
}
restarted="$(events ReplicaRestarted)"
handed="$(events LeadershipHandedOver)"
echo "$restarted"
echo "$handed"
[ "$(grep -c . <<<"$restarted")" = 2 ] || die "expected 2 followers restarted, got: $restarted"
grep -q "$leader" <<<"$restarted" && die "the leader $leader was restarted as a follower: $restarted"
grep -q "leader $leader handed leadership" <<<"$handed" || die "no hand-over by $leader: $handed"
[ "$(tail -1 <<<"$restarted" | cut -d' ' -f1)" \< "$(tail -1 <<<"$handed" | cut -d' ' -f1)" ] \
  || [ "$(tail -1 <<<"$restarted" | cut -d' ' -f1)" = "$(tail -1 <<<"$handed" | cut -d' ' -f1)" ] \
  || die "the leader was restarted before the followers"
kubectl wait --for=condition=ReplicationHealthy "dss/$REPLICATED" -n "$E2E_NAMESPACE" --timeout="$E2E_TIMEOUT"
# shellcheck disable=SC2016 # expanded by sh in the pod, not here
run_job e2e-read-replicated "$PRELUDE"'
got=$(kv --retry 10 --retry-all-errors --retry-delay 2 -H "$auth")
[ "$got" = "$value" ] || { echo "after the rollout read \"$got\", want \"$value\""; exit 1; }
echo "after the rolling update the value is still $value"' "$REPLICATED"
echo "replicated store $REPLICATED: rolled followers first, the leader after a hand-over, data intact"
