//! Reading a snapshot from a file or an object, as a blocking `Read` for
//! the snapshot reader.

use std::io::Read;

use anyhow::Context as _;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;

use super::location::{Location, s3_store};
use crate::bridge::{self, ChannelReader};

/// Opens `location`. An object is downloaded as a stream through a bounded
/// channel, so memory does not grow with its size.
pub async fn open(location: &Location) -> anyhow::Result<Box<dyn Read + Send>> {
    match location {
        Location::File(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Ok(Box::new(file))
        }
        Location::S3 { bucket, key } => {
            let store = s3_store(bucket)?;
            let got = store
                .get(&ObjectPath::from(key.as_str()))
                .await
                .with_context(|| format!("downloading {location}"))?;
            let mut stream = got.into_stream();
            let (tx, rx) = bridge::channel();
            let name = location.to_string();
            tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    let failed = item.is_err();
                    let item =
                        item.map_err(|e| std::io::Error::other(format!("downloading {name}: {e}")));
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
            Ok(Box::new(ChannelReader::new(rx)))
        }
    }
}
