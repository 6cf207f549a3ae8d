//! Bearer-token authentication.
//!
//! Tokens come from a file (one per line) that is reloaded when its content
//! changes (see [`crate::reload`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use subtle::ConstantTimeEq;

use crate::reload::Reload;

type Tokens = Arc<Vec<Box<[u8]>>>;

pub struct TokenSet {
    path: PathBuf,
    tokens: RwLock<Tokens>,
}

fn parse(content: &str) -> Vec<Box<[u8]>> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().into())
        .collect()
}

impl TokenSet {
    /// Reads the file; an unreadable file or one without tokens is an error.
    pub fn load(path: &Path) -> anyhow::Result<Arc<TokenSet>> {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        let tokens = parse(&content);
        if tokens.is_empty() {
            anyhow::bail!("token file {} contains no tokens", path.display());
        }
        tracing::info!(path = %path.display(), tokens = tokens.len(), "loaded auth tokens");
        Ok(Arc::new(TokenSet {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::new(tokens)),
        }))
    }

    /// Constant-time in the token contents: every configured token is
    /// compared, whatever matched before.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut ok = subtle::Choice::from(0);
        for token in tokens.iter() {
            ok |= token.as_ref().ct_eq(presented);
        }
        ok.into()
    }
}

impl Reload for TokenSet {
    type Content = String;
    const WHAT: &'static str = "auth token file";

    fn read(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading token file {}", self.path.display()))
    }

    fn install(&self, content: &String) -> anyhow::Result<()> {
        let tokens = parse(content);
        if tokens.is_empty() {
            anyhow::bail!("token file {} is now empty", self.path.display());
        }
        tracing::info!(path = %self.path.display(), tokens = tokens.len(), "reloaded auth tokens");
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        Ok(())
    }
}

/// The credentials of an `Authorization: Bearer <token>` header.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::Poller;

    #[test]
    fn parses_lines_and_ignores_blanks() {
        let t = parse("  a \n\n b\r\n\t\n");
        assert_eq!(t, vec![Box::from(&b"a"[..]), Box::from(&b"b"[..])]);
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }

    #[test]
    fn verifies_against_every_token_and_refuses_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let set = TokenSet::load(&path).unwrap();
        assert!(set.verify(b"one"));
        assert!(set.verify(b"two"));
        assert!(!set.verify(b"on"));
        assert!(!set.verify(b""));
        std::fs::write(&path, "\n \n").unwrap();
        assert!(TokenSet::load(&path).is_err());
    }

    #[tokio::test]
    async fn reload_keeps_tokens_when_the_file_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old").unwrap();
        let set = TokenSet::load(&path).unwrap();
        let mut poller = Poller::new(set.clone());
        std::fs::write(&path, "new").unwrap();
        poller.poll().await;
        assert!(set.verify(b"new") && !set.verify(b"old"));
        std::fs::write(&path, "").unwrap();
        poller.poll().await;
        assert!(set.verify(b"new"));
        std::fs::remove_file(&path).unwrap();
        poller.poll().await;
        assert!(set.verify(b"new"));
        // A file that comes back after a failed read is loaded again.
        std::fs::write(&path, "newer").unwrap();
        poller.poll().await;
        assert!(set.verify(b"newer") && !set.verify(b"new"));
    }
}
