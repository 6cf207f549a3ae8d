//! `drasi-store-operator render -f store.yaml`: every object the operator
//! would apply for one or more `DrasiStateStore` documents, as multi-document
//! YAML, without a cluster. Secret values the operator would read or
//! generate at apply time are replaced by placeholders, so the output is safe
//! to commit and diff in a GitOps pipeline.

use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;

use crate::builders::{BuildContext, build};
use crate::crd::{DrasiStateStore, FieldError, join_field_errors};
use crate::validated::{Invalid, Referenced, SecretData, TokenSource, validate};

/// Token of a generated `<name>-auth` Secret in rendered output.
pub const GENERATED_TOKEN_PLACEHOLDER: &str = "<generated-at-apply-time>";

/// Token copied from `spec.auth.existingSecret` in rendered output.
pub fn copied_token_placeholder(secret: &str) -> String {
    format!("<copied-from-secret {secret}>")
}

/// CA certificate read from `spec.tls.secretName` in rendered output.
pub fn ca_placeholder(secret: &str) -> String {
    format!("<from-secret {secret}>")
}

const API_VERSION: &str = "drasi.io/v1alpha1";
const KIND: &str = "DrasiStateStore";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error(
        "document {document}: expected apiVersion {API_VERSION} and kind {KIND}, found {found}"
    )]
    NotAStore { document: usize, found: String },
    #[error("document {document}: {message}")]
    Malformed { document: usize, message: String },
    #[error("document {document} ({name}): {}", join_field_errors(.errors))]
    Invalid {
        document: usize,
        name: String,
        errors: Vec<FieldError>,
    },
    /// Not reachable with placeholders, which satisfy every Secret check;
    /// kept so that a future check surfaces instead of being swallowed.
    #[error("document {document} ({name}): {source}")]
    Rejected {
        document: usize,
        name: String,
        source: Invalid,
    },
    #[error("no DrasiStateStore documents in the input")]
    Empty,
}

/// Parses every YAML document of `input_yaml` (empty documents are
/// skipped; documents are numbered from 1), builds each store's objects and
/// returns them, store by store in apply order, as one multi-document YAML.
pub fn render(input_yaml: &str, ctx: &BuildContext) -> Result<String, RenderError> {
    let mut documents = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(input_yaml).enumerate() {
        let document = index + 1;
        let value = Value::deserialize(doc).map_err(|e| RenderError::Yaml {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        documents.extend(render_document(document, value, ctx)?);
    }
    if documents.is_empty() {
        return Err(RenderError::Empty);
    }
    let mut out = String::from(
        "# Rendered by `drasi-store-operator render`. Secret data is base64 of\n\
         # placeholders: the operator generates or copies the real values at\n\
         # apply time.\n",
    );
    for object in documents {
        out.push_str("---\n");
        // JSON values always serialize to YAML.
        out.push_str(&serde_yaml::to_string(&object).expect("JSON value serializes to YAML"));
    }
    Ok(out)
}

fn render_document(
    document: usize,
    value: Value,
    ctx: &BuildContext,
) -> Result<Vec<Value>, RenderError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if api_version != Some(API_VERSION) || kind != Some(KIND) {
        return Err(RenderError::NotAStore {
            document,
            found: format!(
                "apiVersion {} and kind {}",
                api_version.unwrap_or("<none>"),
                kind.unwrap_or("<none>")
            ),
        });
    }
    let store: DrasiStateStore =
        serde_path(&value).map_err(|message| RenderError::Malformed { document, message })?;
    let name = store.name_any();

    // The apiserver prunes fields the schema does not know; in a file under
    // review a typo like `durabilty` would then vanish silently, so say so.
    let mut errors = unknown_fields(
        "spec",
        &value["spec"],
        &serde_json::to_value(&store.spec).expect("spec serializes to JSON"),
    );
    let referenced = placeholders(&store);
    match validate(&store, ctx, &referenced) {
        Ok(valid) if errors.is_empty() => Ok(build(&valid).all()),
        Ok(_) => Err(RenderError::Invalid {
            document,
            name,
            errors,
        }),
        Err(Invalid::Spec(spec_errors)) => {
            errors.extend(spec_errors);
            Err(RenderError::Invalid {
                document,
                name,
                errors,
            })
        }
        Err(source) => Err(RenderError::Rejected {
            document,
            name,
            source,
        }),
    }
}

/// Stand-ins for the Secrets a store references: the token and CA the
/// operator would read or generate at apply time.
fn placeholders(store: &DrasiStateStore) -> Referenced {
    let data = |key: &str, value: String| {
        SecretData::from([(key.to_owned(), k8s_openapi::ByteString(value.into_bytes()))])
    };
    let token = match store
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.as_deref())
    {
        Some(secret) => TokenSource::Stored(Some(data(
            crate::builders::TOKEN_KEY,
            copied_token_placeholder(secret),
        ))),
        None => TokenSource::New(GENERATED_TOKEN_PLACEHOLDER.to_owned()),
    };
    Referenced {
        token,
        tls_secret: store.spec.tls.as_ref().map(|tls| {
            data(
                crate::builders::TLS_CA_KEY,
                ca_placeholder(&tls.secret_name),
            )
        }),
        restore: restore_placeholder(store),
        peer_token: TokenSource::New(GENERATED_TOKEN_PLACEHOLDER.to_owned()),
        // No cluster to ask: the Secrets are assumed labelled and nothing
        // is in the way.
        ..Referenced::default()
    }
}

/// `spec.restore` as the operator would resolve it: a `source` as it is
/// (an s3:// one with its `objectStore`), a backup by a placeholder for the
/// location its status records in the cluster.
fn restore_placeholder(store: &DrasiStateStore) -> Option<crate::crd::RestoredFrom> {
    let restore = store.spec.restore.as_ref()?;
    if let Some(backup) = &restore.from_backup {
        return Some(crate::crd::RestoredFrom {
            backup: Some(backup.clone()),
            location: crate::builders::backup_location_placeholder(backup),
            object_store: None,
        });
    }
    crate::controller::restore::resolve(store, None)
        .ok()
        .flatten()
}

/// Deserializes `value`, naming the field that failed (`spec.limits.maxKeyBytes`).
fn serde_path(value: &Value) -> Result<DrasiStateStore, String> {
    // serde_json's own error has no path; find the deepest field whose
    // subtree alone still fails, by retrying with each field removed.
    serde_json::from_value::<DrasiStateStore>(value.clone()).map_err(|e| {
        let path = failing_path(value, &mut Vec::new()).unwrap_or_default();
        if path.is_empty() {
            e.to_string()
        } else {
            format!("{path}: {e}")
        }
    })
}

/// The path of the deepest field whose removal makes the document parse.
/// Required fields (like `spec`) cannot be removed, so when no field at a
/// level is the culprit on its own, the search continues inside each object.
fn failing_path(root: &Value, prefix: &mut Vec<String>) -> Option<String> {
    let node = prefix.iter().try_fold(root, |node, key| node.get(key))?;
    let keys: Vec<String> = node.as_object()?.keys().cloned().collect();
    for key in &keys {
        let mut without = root.clone();
        let parent = prefix
            .iter()
            .try_fold(&mut without, |node, k| node.get_mut(k))?;
        parent.as_object_mut()?.remove(key);
        if serde_json::from_value::<DrasiStateStore>(without).is_ok() {
            prefix.push(key.clone());
            let found = failing_path(root, prefix).unwrap_or_else(|| prefix.join("."));
            prefix.pop();
            return Some(found);
        }
    }
    for key in keys {
        prefix.push(key);
        let found = failing_path(root, prefix);
        prefix.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Fields of `input` that did not survive deserialization into the typed
/// spec: unknown to the schema (or misspelled).
fn unknown_fields(path: &str, input: &Value, parsed: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (input, parsed) {
        (Value::Object(input), Value::Object(parsed)) => {
            for (key, value) in input {
                let child = format!("{path}.{key}");
                match parsed.get(key) {
                    Some(parsed_value) => {
                        errors.extend(unknown_fields(&child, value, parsed_value))
                    }
                    None if value.is_null() => {}
                    None => errors.push(FieldError {
                        field: child,
                        message: "unknown field".to_owned(),
                    }),
                }
            }
        }
        (Value::Array(input), Value::Array(parsed)) => {
            for (i, (a, b)) in input.iter().zip(parsed).enumerate() {
                errors.extend(unknown_fields(&format!("{path}[{i}]"), a, b));
            }
        }
        _ => {}
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BuildContext {
        BuildContext::new("ghcr.io/drasi-project/drasi-store-server:0.1.0")
    }

    fn kinds(yaml: &str) -> Vec<(String, String)> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_owned(),
                    v["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The restore init container's args of the one StatefulSet in `yaml`.
    fn restore_args(yaml: &str) -> Vec<String> {
        let sts = serde_yaml::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .find(|v| v["kind"] == "StatefulSet")
            .expect("a StatefulSet");
        serde_json::from_value(sts["spec"]["template"]["spec"]["initContainers"][0]["args"].clone())
            .expect("an init container with args")
    }

    #[test]
    fn a_restore_renders_its_init_container() {
        let head = "apiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: r\nspec:\n  restore:\n";
        // A backup's location is known only in the cluster.
        let out = render(&format!("{head}    fromBackup: b1\n"), &ctx()).unwrap();
        assert_eq!(
            restore_args(&out)[2],
            "<location of DrasiStateStoreBackup b1>"
        );
        let out = render(&format!("{head}    source: s3://bkt/a.snap\n"), &ctx()).unwrap();
        assert_eq!(
            restore_args(&out),
            [
                "restore",
                "--input",
                "s3://bkt/a.snap",
                "--data-dir",
                "/data",
                "--if-empty"
            ]
        );
        let both = format!("{head}    fromBackup: b1\n    source: s3://bkt/a.snap\n");
        let err = render(&both, &ctx()).unwrap_err().to_string();
        assert!(
            err.contains("exactly one of fromBackup and source"),
            "{err}"
        );
    }

    #[test]
    fn renders_every_object_of_every_store_in_apply_order() {
        let input = "apiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: a\nspec: {}\n---\n---\napiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: b\n  namespace: prod\nspec:\n  auth:\n    existingSecret: mine\n";
        let out = render(input, &ctx()).unwrap();
        let k = |kind: &str, name: &str| (kind.to_owned(), name.to_owned());
        assert_eq!(
            kinds(&out),
            vec![
                k("Secret", "a-auth"),
                k("Secret", "a-connection"),
                k("Service", "a-headless"),
                k("Service", "a"),
                k("StatefulSet", "a"),
                k("Secret", "b-connection"),
                k("Service", "b-headless"),
                k("Service", "b"),
                k("StatefulSet", "b"),
            ]
        );
        assert!(out.contains("namespace: default"));
        assert!(out.contains("namespace: prod"));
        assert!(!out.contains("ownerReferences"));
    }

    #[test]
    fn secrets_hold_placeholders_only() {
        let input = "apiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: a\nspec:\n  tls:\n    secretName: a-tls\n";
        let out = render(input, &ctx()).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        let connection = docs
            .iter()
            .find(|d| d["metadata"]["name"] == "a-connection")
            .unwrap();
        let decoded: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(connection.clone()).unwrap();
        let data = decoded.data.unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(text("DRASI_STATE_STORE_TOKEN"), GENERATED_TOKEN_PLACEHOLDER);
        assert_eq!(text("DRASI_STATE_STORE_CA_CERT"), "<from-secret a-tls>");
        assert_eq!(text("DRASI_STATE_STORE_URL"), "https://a.default.svc:7070");
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let store = |spec: &str| {
            format!(
                "apiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: s\nspec:\n{spec}"
            )
        };
        let cases = [
            (store("  durability: Fast\n"), "spec.durability"),
            (
                store("  limits:\n    maxKeyBytes: 0\n"),
                "spec.limits.maxKeyBytes",
            ),
            (
                store("  durabilty: Eventual\n"),
                "spec.durabilty: unknown field",
            ),
            (store("  storage:\n    size: lots\n"), "spec.storage.size"),
            (
                store("  pod:\n    labels:\n      app.kubernetes.io/instance: x\n"),
                "spec.pod.labels",
            ),
            (
                store("  limits:\n    maxKeyBytes: many\n"),
                "spec.limits.maxKeyBytes",
            ),
        ];
        for (input, expected) in cases {
            let two_docs = format!(
                "{}---\n{input}",
                store("  {}\n").replace("name: s", "name: ok")
            );
            let err = render(&two_docs, &ctx()).unwrap_err().to_string();
            assert!(err.starts_with("document 2"), "{err}");
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        let err = render(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n",
            &ctx(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("document 1") && err.contains("kind Secret"),
            "{err}"
        );
        assert!(matches!(render("", &ctx()), Err(RenderError::Empty)));
        assert!(matches!(
            render("a: [", &ctx()),
            Err(RenderError::Yaml { document: 1, .. })
        ));
    }
}
