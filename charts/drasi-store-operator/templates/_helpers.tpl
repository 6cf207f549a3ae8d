{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "drasi-store-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart
name it is used as is (`helm install drasi-store-operator ...` gives
`drasi-store-operator`, not `drasi-store-operator-drasi-store-operator`).
*/}}
{{- define "drasi-store-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "drasi-store-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object of the chart. */}}
{{- define "drasi-store-operator.labels" -}}
helm.sh/chart: {{ include "drasi-store-operator.chart" . }}
{{ include "drasi-store-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: drasi
{{- end }}

{{/* Selector labels (immutable for a Deployment: keep them minimal). */}}
{{- define "drasi-store-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drasi-store-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount the operator runs as. */}}
{{- define "drasi-store-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "drasi-store-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "drasi-store-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Default store-server image passed to the operator as --server-image. */}}
{{- define "drasi-store-operator.serverImage" -}}
{{- default (printf "ghcr.io/drasi-project/drasi-store-server:%s" .Chart.AppVersion) .Values.serverImage }}
{{- end }}

{{/* "true" when leader election is on: forced, or more than one replica. */}}
{{- define "drasi-store-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* Namespace the operator watches; empty means all namespaces. */}}
{{- define "drasi-store-operator.watchNamespace" -}}
{{- .Values.watchNamespace | default "" }}
{{- end }}

{{/*
Name of the cluster-scoped RBAC objects. Cluster-scoped names are shared by
all namespaces, so they carry the release namespace: two releases of the
same name in different namespaces (e.g. one operator per watched namespace)
do not overwrite each other's ClusterRole.
*/}}
{{- define "drasi-store-operator.clusterRbacName" -}}
{{- printf "%s-%s" (include "drasi-store-operator.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/*
Rules for the namespaced resources the reconciler manages. Granted
cluster-wide by the ClusterRole, or in the watched namespace by a Role when
watchNamespace is set. Keep in sync with `drasi-store-operator rbac`
(scripts/check-chart.sh compares them).
*/}}
{{- define "drasi-store-operator.namespacedRules" -}}
# The DrasiStateStores: watched, finalizer added/removed by patch.
- apiGroups: ["drasi.io"]
  resources: ["drasistatestores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["drasi.io"]
  resources: ["drasistatestores/status"]
  verbs: ["get", "patch"]
# DrasiStateStoreBackups: watched and their status written; schedules
# create them, retention deletes them, and the snapshot deletion patches
# away their finalizer.
- apiGroups: ["drasi.io"]
  resources: ["drasistatestorebackups"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["drasi.io"]
  resources: ["drasistatestorebackups/status"]
  verbs: ["get", "patch"]
# DrasiStateStoreScheduledBackups: watched; only their status is written.
- apiGroups: ["drasi.io"]
  resources: ["drasistatestorescheduledbackups"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["drasi.io"]
  resources: ["drasistatestorescheduledbackups/status"]
  verbs: ["get", "patch"]
# Backup and snapshot deletion Jobs: created once (never patched) and
# watched; they go with their backup through the owner reference. Only a
# failed deletion Job is deleted, so its retry can reuse the name.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Pods: a finished backup pod's log's last line is the summary, a failed
# one's termination message the error; a replicated store's pods are
# listed and deleted one at a time to roll out a new template (followers
# first, the leader after it handed leadership over).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Owned objects: watched and server-side applied (an apply that creates an
# object needs create); StatefulSets are deleted with orphan propagation
# during volume expansion.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Services: the peers Service of a replicated store is deleted when a
# store no longer needs it.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The optional per-store NetworkPolicy (spec.networkPolicy): read for
# ownership, applied, deleted when turned off; not watched.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# The PodDisruptionBudget of a replicated store (spec.replicas 3 or 5): read
# for ownership, applied, deleted when not needed; not watched.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# PVCs of the volumeClaimTemplate: capacity, expansion, pvcRetention Delete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Rules for cluster-scoped resources; always in a ClusterRole. */}}
{{- define "drasi-store-operator.clusterRules" -}}
# Whether a StorageClass allows volume expansion.
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
{{- with (include "drasi-store-operator.watchNamespace" .) }}
# Only the watched namespace (to notice when it is being deleted).
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: [{{ . | quote }}]
  verbs: ["get"]
{{- else }}
# To notice when a store's namespace is being deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- if .Values.manageCrd }}
# --manage-crd: the operator applies its own CRD at startup. `create` cannot
# be limited by resourceNames; get/patch are limited to its own CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["create"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["drasistatestores.drasi.io", "drasistatestorebackups.drasi.io", "drasistatestorescheduledbackups.drasi.io"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
