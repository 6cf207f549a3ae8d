//! Watch streams of the simulated API server: an event log that a new
//! watch replays from its `resourceVersion`, and the open streams that live
//! events are sent to.

use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::store::{in_collection, matches_selector};

struct Watch {
    collection: String,
    selector: Option<String>,
    events: mpsc::UnboundedSender<Bytes>,
}

/// One watch event, kept so a watch can start from any resourceVersion.
struct LoggedEvent {
    resource_version: u64,
    path: String,
    line: Bytes,
    object: Value,
}

#[derive(Default)]
pub struct Watches {
    open: Vec<Watch>,
    log: Vec<LoggedEvent>,
}

impl Watches {
    /// Opens a watch on `collection`: replays logged events newer than
    /// `since`, then streams live ones. The stream never ends on its own.
    pub fn open(
        &mut self,
        collection: &str,
        selector: Option<String>,
        since: u64,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        for event in self.log.iter().filter(|e| e.resource_version > since) {
            if in_collection(&event.path, collection)
                && selector
                    .as_deref()
                    .is_none_or(|s| matches_selector(&event.object, s))
            {
                let _ = tx.send(event.line.clone());
            }
        }
        self.open.push(Watch {
            collection: collection.to_string(),
            selector,
            events: tx,
        });
        rx
    }

    /// Logs a watch event at `resource_version` and sends it to the open
    /// watches it matches.
    pub fn notify(&mut self, resource_version: u64, path: &str, event_type: &str, object: &Value) {
        let mut line =
            serde_json::to_vec(&json!({ "type": event_type, "object": object })).expect("JSON");
        line.push(b'\n');
        let line = Bytes::from(line);
        self.open.retain(|watch| {
            let matches = in_collection(path, &watch.collection)
                && watch
                    .selector
                    .as_deref()
                    .is_none_or(|s| matches_selector(object, s));
            if matches {
                watch.events.send(line.clone()).is_ok()
            } else {
                !watch.events.is_closed()
            }
        });
        self.log.push(LoggedEvent {
            resource_version,
            path: path.to_string(),
            line,
            object: object.clone(),
        });
    }

    /// Streams whose client is still listening.
    pub fn open_count(&mut self) -> usize {
        self.open.retain(|w| !w.events.is_closed());
        self.open.len()
    }
}
