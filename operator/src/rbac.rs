//! The Kubernetes permissions the operator needs, as data.
//!
//! `drasi-store-operator rbac` prints these rules; the Helm chart's ClusterRole
//! is compared against them, and the simulated API server tests check every
//! request the reconciler sends against them (`RequestAttributes`, behind
//! the `test-support` feature). That keeps "least privilege" honest in both
//! directions: a missing rule fails the reconcile tests, an extra rule is
//! visible in review of this one list.

use k8s_openapi::api::rbac::v1::PolicyRule;

struct Rule {
    group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    resource_names: &'static [&'static str],
}

const RULES: &[Rule] = &[
    // The custom resource: watched by the controller; patched to add and
    // remove the finalizer.
    Rule {
        group: "drasi.io",
        resources: &["drasistatestores"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
    },
    Rule {
        group: "drasi.io",
        resources: &["drasistatestores/status"],
        verbs: &["get", "patch"],
        resource_names: &[],
    },
    // Backups: watched by their own controller, which only ever writes
    // their status. Schedules create them (never applied over), retention
    // deletes them, and the data deletion patches away their finalizer.
    Rule {
        group: "drasi.io",
        resources: &["drasistatestorebackups"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
    },
    Rule {
        group: "drasi.io",
        resources: &["drasistatestorebackups/status"],
        verbs: &["get", "patch"],
        resource_names: &[],
    },
    // Scheduled backups: watched; only their status is written.
    Rule {
        group: "drasi.io",
        resources: &["drasistatestorescheduledbackups"],
        verbs: &["get", "list", "watch"],
        resource_names: &[],
    },
    Rule {
        group: "drasi.io",
        resources: &["drasistatestorescheduledbackups/status"],
        verbs: &["get", "patch"],
        resource_names: &[],
    },
    // Backup and snapshot deletion Jobs: created once (never applied over,
    // so never patched) and watched. A Job goes with its backup through its
    // owner reference; only a failed deletion Job is deleted, so that the
    // retry can create a new one under the same name.
    Rule {
        group: "batch",
        resources: &["jobs"],
        verbs: &["get", "list", "watch", "create", "delete"],
        resource_names: &[],
    },
    // Pods: a finished backup Job's pod's log's last line is the backup's
    // summary (size, records, checksum), a failed one's termination
    // message the error. A replicated store's pods are listed and deleted
    // one at a time to roll out a new template (followers first, the
    // leader after it handed leadership over; controller/rollout).
    Rule {
        group: "",
        resources: &["pods"],
        verbs: &["list", "delete"],
        resource_names: &[],
    },
    Rule {
        group: "",
        resources: &["pods/log"],
        verbs: &["get"],
        resource_names: &[],
    },
    // Owned objects: watched (`.owns()`), server-side applied (`create` is
    // needed when an apply creates the object), and the StatefulSet is
    // deleted with orphan propagation during volume expansion.
    Rule {
        group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
    },
    // Services are also deleted: the peers Service `N-peers` of a
    // replicated store goes when the store no longer needs it.
    Rule {
        group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
    },
    // Secrets: the generated `N-auth` and `N-connection`, and reading the
    // user's `auth.existingSecret` and `tls.secretName`.
    Rule {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        resource_names: &[],
    },
    // The optional NetworkPolicy `N`: read every pass (ownership), applied
    // with `networkPolicy.enabled`, deleted when it is turned off. Not
    // watched (no list/watch): drift is taken back at the periodic resync.
    Rule {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["get", "create", "patch", "delete"],
        resource_names: &[],
    },
    // The PodDisruptionBudget `N` of a replicated store: read every pass
    // (ownership), applied with `replicas` 3 or 5, deleted otherwise. Not
    // watched, like the NetworkPolicy.
    Rule {
        group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: &["get", "create", "patch", "delete"],
        resource_names: &[],
    },
    // PVCs come from the StatefulSet's volumeClaimTemplate: read for capacity,
    // patched to grow, deleted on `pvcRetention.whenDeleted: Delete`.
    Rule {
        group: "",
        resources: &["persistentvolumeclaims"],
        verbs: &["get", "list", "patch", "delete"],
        resource_names: &[],
    },
    // Whether the StorageClass allows volume expansion.
    Rule {
        group: "storage.k8s.io",
        resources: &["storageclasses"],
        verbs: &["get"],
        resource_names: &[],
    },
    // Whether a namespace is terminating, so the finalizer never blocks it.
    Rule {
        group: "",
        resources: &["namespaces"],
        verbs: &["get"],
        resource_names: &[],
    },
    // kube-runtime's event recorder creates events and patches repeated ones.
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        resource_names: &[],
    },
    // Leader election (kube-lease-manager: get, create, server-side apply).
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "patch"],
        resource_names: &[],
    },
    // `--manage-crd`: server-side apply of the operator's own CRD. `create`
    // cannot be limited by name (the name is not known before creation).
    Rule {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["get", "patch"],
        resource_names: &[
            "drasistatestores.drasi.io",
            "drasistatestorebackups.drasi.io",
            "drasistatestorescheduledbackups.drasi.io",
        ],
    },
    Rule {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["create"],
        resource_names: &[],
    },
];

/// The ClusterRole rules of the operator, in a stable order.
pub fn cluster_role_rules() -> Vec<PolicyRule> {
    RULES
        .iter()
        .map(|rule| PolicyRule {
            api_groups: Some(vec![rule.group.to_string()]),
            resources: Some(rule.resources.iter().map(|r| r.to_string()).collect()),
            verbs: rule.verbs.iter().map(|v| v.to_string()).collect(),
            resource_names: (!rule.resource_names.is_empty())
                .then(|| rule.resource_names.iter().map(|r| r.to_string()).collect()),
            non_resource_urls: None,
        })
        .collect()
}

/// The rules as the `rules:` YAML of a ClusterRole.
pub fn cluster_role_rules_yaml() -> String {
    let rules = cluster_role_rules();
    // PolicyRule serialisation cannot fail: it is plain strings and lists.
    let body = serde_yaml::to_string(&serde_json::json!({ "rules": rules }))
        .expect("PolicyRule serialises to YAML");
    format!("# ClusterRole rules drasi-store-operator needs (drasi-store-operator rbac).\n{body}")
}

/// What an API request asks for, in RBAC terms. Test-only (feature
/// `test-support`): the simulated API server checks each request against
/// [`cluster_role_rules`] with it.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    pub group: String,
    /// Resource, with `/subresource` when the request targets one.
    pub resource: String,
    pub name: Option<String>,
    pub verb: String,
}

#[cfg(any(test, feature = "test-support"))]
impl RequestAttributes {
    /// Maps an HTTP request on the Kubernetes API to its RBAC attributes, as
    /// the API server's request-info resolver does. `None` for paths that are
    /// not resource requests (discovery, `/version`).
    pub fn from_request(method: &str, path: &str, query: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let rest = match rest {
            // `namespaces/<ns>/<resource>...`; `namespaces/<name>[/status]` is the
            // namespace object itself.
            ["namespaces", _ns, resource, tail @ ..]
                if !(group.is_empty() && matches!(*resource, "status" | "finalize")) =>
            {
                let mut v = vec![*resource];
                v.extend_from_slice(tail);
                v
            }
            other => other.to_vec(),
        };
        let (resource, name) = match rest.as_slice() {
            [resource] => (resource.to_string(), None),
            [resource, name] => (resource.to_string(), Some(name.to_string())),
            [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1");
        let verb = match (method, name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Self {
            group: group.to_string(),
            resource,
            name,
            verb: verb.to_string(),
        })
    }

    /// Whether `rules` grant this request.
    pub fn is_allowed_by(&self, rules: &[PolicyRule]) -> bool {
        rules.iter().any(|rule| {
            let has = |list: &Option<Vec<String>>, value: &str| {
                list.as_ref()
                    .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
            };
            let names_ok = match &rule.resource_names {
                None => true,
                Some(names) if names.is_empty() => true,
                Some(names) => self.name.as_ref().is_some_and(|n| names.contains(n)),
            };
            has(&rule.api_groups, &self.group)
                && has(&rule.resources, &self.resource)
                && rule.verbs.iter().any(|v| v == "*" || *v == self.verb)
                && names_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: &str) -> RequestAttributes {
        RequestAttributes::from_request(method, path, query).expect("resource request")
    }

    #[test]
    fn maps_requests_like_the_api_server() {
        let a = attrs("GET", "/api/v1/namespaces/ns/secrets/s-auth", "");
        assert_eq!(
            (a.group.as_str(), a.resource.as_str(), a.verb.as_str()),
            ("", "secrets", "get")
        );
        assert_eq!(a.name.as_deref(), Some("s-auth"));
        let a = attrs(
            "PATCH",
            "/apis/drasi.io/v1alpha1/namespaces/ns/drasistatestores/s/status",
            "",
        );
        assert_eq!(a.resource, "drasistatestores/status");
        assert_eq!(a.verb, "patch");
        let a = attrs(
            "GET",
            "/apis/apps/v1/statefulsets",
            "watch=true&labelSelector=x",
        );
        assert_eq!((a.group.as_str(), a.verb.as_str()), ("apps", "watch"));
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/ns", "").resource,
            "namespaces"
        );
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/ns/persistentvolumeclaims", "").verb,
            "list"
        );
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/ns/persistentvolumeclaims", "").verb,
            "deletecollection"
        );
        assert!(RequestAttributes::from_request("GET", "/version", "").is_none());
    }

    #[test]
    fn rules_grant_what_the_operator_needs_and_nothing_broader() {
        let rules = cluster_role_rules();
        assert!(
            attrs("POST", "/apis/events.k8s.io/v1/namespaces/ns/events", "").is_allowed_by(&rules)
        );
        assert!(
            attrs("DELETE", "/apis/apps/v1/namespaces/ns/statefulsets/s", "").is_allowed_by(&rules)
        );
        assert!(!attrs("DELETE", "/api/v1/namespaces/ns/secrets/s", "").is_allowed_by(&rules));
        // A replicated store's disruption budget and peers Service.
        let budget = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/s";
        for method in ["GET", "PATCH", "DELETE"] {
            assert!(attrs(method, budget, "").is_allowed_by(&rules), "{method}");
        }
        assert!(
            !attrs("GET", "/apis/policy/v1/poddisruptionbudgets", "watch=true")
                .is_allowed_by(&rules)
        );
        assert!(
            attrs("DELETE", "/api/v1/namespaces/ns/services/s-peers", "").is_allowed_by(&rules)
        );
        // Pods: listed (a backup Job's pod, a replicated store's replicas),
        // their logs read, and deleted one by one (a rollout), nothing else.
        assert!(attrs("GET", "/api/v1/namespaces/ns/pods", "").is_allowed_by(&rules));
        assert!(attrs("GET", "/api/v1/namespaces/ns/pods/p/log", "").is_allowed_by(&rules));
        assert!(!attrs("GET", "/api/v1/namespaces/ns/pods/p", "").is_allowed_by(&rules));
        assert!(attrs("DELETE", "/api/v1/namespaces/ns/pods/p", "").is_allowed_by(&rules));
        assert!(!attrs("DELETE", "/api/v1/namespaces/ns/pods", "").is_allowed_by(&rules));
        // Jobs are created, never changed; only a failed snapshot deletion
        // Job is deleted (one at a time, never a collection).
        assert!(attrs("POST", "/apis/batch/v1/namespaces/ns/jobs", "").is_allowed_by(&rules));
        assert!(attrs("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", "").is_allowed_by(&rules));
        assert!(!attrs("DELETE", "/apis/batch/v1/namespaces/ns/jobs", "").is_allowed_by(&rules));
        assert!(!attrs("PUT", "/apis/batch/v1/namespaces/ns/jobs/j", "").is_allowed_by(&rules));
        assert!(!attrs("PATCH", "/apis/batch/v1/namespaces/ns/jobs/j", "").is_allowed_by(&rules));
        // Backups: status written; created by schedules, deleted by
        // retention, their finalizer patched away; never replaced.
        let backups = "/apis/drasi.io/v1alpha1/namespaces/ns/drasistatestorebackups";
        assert!(attrs("GET", backups, "watch=true").is_allowed_by(&rules));
        assert!(attrs("PATCH", &format!("{backups}/b/status"), "").is_allowed_by(&rules));
        assert!(attrs("POST", backups, "").is_allowed_by(&rules));
        assert!(attrs("DELETE", &format!("{backups}/b"), "").is_allowed_by(&rules));
        assert!(attrs("PATCH", &format!("{backups}/b"), "").is_allowed_by(&rules));
        assert!(!attrs("PUT", &format!("{backups}/b"), "").is_allowed_by(&rules));
        assert!(!attrs("DELETE", backups, "").is_allowed_by(&rules));
        // Schedules: read, and only their status is written.
        let schedules = "/apis/drasi.io/v1alpha1/namespaces/ns/drasistatestorescheduledbackups";
        assert!(attrs("GET", schedules, "watch=true").is_allowed_by(&rules));
        assert!(attrs("PATCH", &format!("{schedules}/s/status"), "").is_allowed_by(&rules));
        assert!(!attrs("PATCH", &format!("{schedules}/s"), "").is_allowed_by(&rules));
        assert!(!attrs("DELETE", &format!("{schedules}/s"), "").is_allowed_by(&rules));
        assert!(!attrs("POST", schedules, "").is_allowed_by(&rules));
        assert!(
            attrs(
                "PATCH",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/drasistatestores.drasi.io",
                ""
            )
            .is_allowed_by(&rules)
        );
        assert!(
            !attrs(
                "PATCH",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/other.example.com",
                ""
            )
            .is_allowed_by(&rules)
        );
        assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")));
    }

    #[test]
    fn yaml_lists_every_rule() {
        let yaml = cluster_role_rules_yaml();
        let parsed: serde_json::Value =
            serde_yaml::from_str(&yaml).expect("rbac output is valid YAML");
        assert_eq!(parsed["rules"].as_array().map(Vec::len), Some(RULES.len()));
        assert!(yaml.contains("persistentvolumeclaims"));
    }
}
