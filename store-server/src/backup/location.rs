//! Where a snapshot is read from or written to: a local path or an object
//! in S3-compatible storage (`s3://bucket/key`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    S3 { bucket: String, key: String },
}

impl Location {
    pub fn parse(raw: &str) -> anyhow::Result<Location> {
        let Some(rest) = raw.strip_prefix("s3://") else {
            if raw.contains("://") {
                bail!("unsupported location {raw:?}: use a file path or s3://bucket/key");
            }
            if raw.is_empty() {
                bail!("the location is empty");
            }
            return Ok(Location::File(PathBuf::from(raw)));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            bail!("{raw:?} is not an object location: use s3://bucket/key");
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// An S3 client for `bucket`, configured like the AWS CLI from the
/// standard variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL` (any S3-compatible service) and `AWS_ALLOW_HTTP=true`
/// for a plain-HTTP endpoint.
pub fn s3_store(bucket: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let store = builder
        .build()
        .with_context(|| format!("configuring S3 access to bucket {bucket:?}"))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_files_and_objects() {
        assert_eq!(
            Location::parse("/backups/a.snap").unwrap(),
            Location::File("/backups/a.snap".into())
        );
        assert_eq!(
            Location::parse("s3://b/dir/x.snap").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                key: "dir/x.snap".into()
            }
        );
        for bad in [
            "s3://",
            "s3://b",
            "s3://b/",
            "s3:///k",
            "gs://b/k",
            "",
            "s3://b/dir/",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
