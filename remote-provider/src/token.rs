//! Where the bearer token comes from.
//!
//! A token file is how Kubernetes delivers a rotated Secret without a
//! restart (the kubelet swaps the mounted file), so it is re-read at most
//! once per [`REFRESH_INTERVAL`] and immediately after the server answers
//! 401. An env var token is frozen at pod start and never changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

/// How stale a token read from a file may be. Reading a tiny file once a
/// second costs nothing next to the requests, and bounds how long a rotated
/// token is ignored.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) enum TokenSource {
    None,
    Inline(HeaderValue),
    File(FileToken),
}

pub(crate) struct FileToken {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    header: HeaderValue,
    read_at: Instant,
}

impl TokenSource {
    pub(crate) fn inline(token: &str) -> Result<Self, String> {
        Ok(TokenSource::Inline(bearer(token)?))
    }

    /// Reads the file once now so that a wrong path fails at build time.
    pub(crate) fn file(path: PathBuf) -> Result<Self, String> {
        let header = read_token_file(&path)?;
        Ok(TokenSource::File(FileToken {
            path,
            state: Mutex::new(FileState {
                header,
                read_at: Instant::now(),
            }),
        }))
    }

    /// The `Authorization` header for the next request.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        match self {
            TokenSource::None => None,
            TokenSource::Inline(h) => Some(h.clone()),
            TokenSource::File(file) => Some(file.current(false).0),
        }
    }

    /// After a 401: re-read the file now. True when the token changed, i.e.
    /// a retry has a chance to succeed.
    pub(crate) fn reload(&self) -> bool {
        match self {
            TokenSource::File(file) => file.current(true).1,
            _ => false,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            TokenSource::None => "none".to_string(),
            TokenSource::Inline(_) => "inline (redacted)".to_string(),
            TokenSource::File(f) => format!("file {}", f.path.display()),
        }
    }
}

impl FileToken {
    fn current(&self, force: bool) -> (HeaderValue, bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !force && state.read_at.elapsed() < REFRESH_INTERVAL {
            return (state.header.clone(), false);
        }
        state.read_at = Instant::now();
        match read_token_file(&self.path) {
            Ok(header) => {
                let changed = header != state.header;
                if changed {
                    tracing::info!(path = %self.path.display(), "state store token file changed; using the new token");
                    state.header = header;
                }
                (state.header.clone(), changed)
            }
            Err(err) => {
                // A Secret update replaces the file atomically, but a
                // transient error must not drop a token that still works.
                tracing::warn!(error = %err, "keeping the previous state store token");
                (state.header.clone(), false)
            }
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The file's first line that is neither blank nor a `#` comment: the
/// server's token file format, where further lines are tokens the server
/// also accepts (during a rotation), never part of this one.
fn read_token_file(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    bearer(line).map_err(|e| format!("token file {}: {e}", path.display()))
}

/// Secrets often end with a newline (`echo token > file`); surrounding
/// whitespace is never part of a bearer token.
fn bearer(token: &str) -> Result<HeaderValue, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err("the token is empty".to_string());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in an HTTP header".to_string())?;
    // Keeps the value out of hyper's debug output and HPACK tables.
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_is_trimmed_and_validated() {
        let t = TokenSource::inline(" abc\n").unwrap();
        assert_eq!(t.header().unwrap(), "Bearer abc");
        assert!(t.header().unwrap().is_sensitive());
        assert!(TokenSource::inline("  \n").is_err());
        let err = TokenSource::inline("a\u{7}b").unwrap_err();
        assert!(!err.contains("a\u{7}b"));
    }

    #[test]
    fn file_is_reread_after_the_interval_or_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let t = TokenSource::file(path.clone()).unwrap();
        assert_eq!(t.header().unwrap(), "Bearer one");

        std::fs::write(&path, "two\n").unwrap();
        // Within the interval the cached value is used...
        assert_eq!(t.header().unwrap(), "Bearer one");
        // ...but a 401 forces a re-read.
        assert!(t.reload());
        assert_eq!(t.header().unwrap(), "Bearer two");
        assert!(!t.reload());

        std::fs::write(&path, "three").unwrap();
        std::thread::sleep(REFRESH_INTERVAL + Duration::from_millis(50));
        assert_eq!(t.header().unwrap(), "Bearer three");
    }

    #[test]
    fn file_takes_the_first_token_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "# rotated by ops\n\n  current \nprevious\n").unwrap();
        let t = TokenSource::file(path.clone()).unwrap();
        assert_eq!(t.header().unwrap(), "Bearer current");
        std::fs::write(&path, "# only a comment\n").unwrap();
        assert!(TokenSource::file(path).is_err());
    }

    #[test]
    fn unreadable_file_keeps_the_last_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one").unwrap();
        let t = TokenSource::file(path.clone()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!t.reload());
        assert_eq!(t.header().unwrap(), "Bearer one");
    }

    #[test]
    fn missing_or_empty_file_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let err = TokenSource::file(path.clone()).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, "\n").unwrap();
        assert!(TokenSource::file(path).unwrap_err().contains("empty"));
    }
}
