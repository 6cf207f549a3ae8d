//! Bearer-token authentication.
//!
//! Tokens come from a file (one per line) that is reloaded when its content
//! changes (see [`crate::reload`]). Lines starting with `#` are comments, and
//! a token shorter than [`MIN_TOKEN_BYTES`] is refused: a one-character
//! token can be guessed, and a comment must never become a credential.

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

/// Shortest token accepted: 16 bytes of base64 are 96 bits, far beyond
/// guessing over the network.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The tokens of a token file, or why the file is refused. The error names
/// the line, never its content.
fn parse(content: &str) -> anyhow::Result<Vec<Box<[u8]>>> {
    let mut tokens = Vec::new();
    for (index, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() < MIN_TOKEN_BYTES {
            anyhow::bail!(
                "line {} holds a token of {} bytes, shorter than the minimum of \
                 {MIN_TOKEN_BYTES} (lines starting with '#' are comments)",
                index + 1,
                line.len()
            );
        }
        tokens.push(line.as_bytes().into());
    }
    if tokens.is_empty() {
        anyhow::bail!("it contains no tokens");
    }
    Ok(tokens)
}

impl TokenSet {
    /// Reads the file; an unreadable file or one without tokens is an error.
    pub fn load(path: &Path) -> anyhow::Result<Arc<TokenSet>> {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        let tokens =
            parse(&content).with_context(|| format!("token file {} refused", path.display()))?;
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

impl TokenSet {
    /// The first token of the file: the one this server presents when it
    /// calls others (peers), so a rotation lists the new token first.
    pub fn first(&self) -> Option<Box<[u8]>> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.first().cloned()
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
        let tokens = match parse(content) {
            Ok(tokens) => tokens,
            Err(err) => {
                // An error, not a warning: the operator who rotated the
                // Secret believes the new tokens are live, and they are not.
                tracing::error!(
                    path = %self.path.display(),
                    error = %err,
                    "the changed token file is refused; the previous tokens stay valid"
                );
                return Err(err.context(format!("token file {} refused", self.path.display())));
            }
        };
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

    const A: &str = "token-a-0123456789";
    const B: &str = "token-b-0123456789";

    #[test]
    fn parses_lines_and_ignores_blanks_and_comments() {
        let t = parse(&format!("  {A} \n\n# rotated by ops\n  #x\n {B}\r\n\t\n")).unwrap();
        assert_eq!(t, vec![Box::from(A.as_bytes()), Box::from(B.as_bytes())]);
    }

    #[test]
    fn refuses_short_tokens_naming_the_line_not_the_token() {
        let err = parse(&format!("{A}\n# c\nshort-secret\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("12 bytes"), "{err}");
        assert!(err.contains("16"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
        // Exactly the minimum is fine.
        assert!(parse("0123456789abcdef").is_ok());
        assert!(parse("# only a comment\n").is_err());
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
        std::fs::write(&path, format!("{A}\n{B}\n")).unwrap();
        let set = TokenSet::load(&path).unwrap();
        assert!(set.verify(A.as_bytes()));
        assert!(set.verify(B.as_bytes()));
        assert!(!set.verify(&A.as_bytes()[1..]));
        assert!(!set.verify(b""));
        std::fs::write(&path, "\n \n").unwrap();
        assert!(TokenSet::load(&path).is_err());
        std::fs::write(&path, format!("{A}\nx\n")).unwrap();
        let err = format!("{:#}", TokenSet::load(&path).err().unwrap());
        assert!(err.contains("shorter than the minimum"), "{err}");
    }

    #[tokio::test]
    async fn reload_keeps_tokens_when_the_file_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (old, new, newer) = (
            "old-token-0123456789",
            "new-token-0123456789",
            "newer-token-0123456789",
        );
        std::fs::write(&path, old).unwrap();
        let set = TokenSet::load(&path).unwrap();
        let mut poller = Poller::new(set.clone());
        std::fs::write(&path, new).unwrap();
        poller.poll().await;
        assert!(set.verify(new.as_bytes()) && !set.verify(old.as_bytes()));
        std::fs::write(&path, "").unwrap();
        poller.poll().await;
        assert!(set.verify(new.as_bytes()));
        // A short token in the new file refuses the whole file.
        std::fs::write(&path, format!("{newer}\nshort\n")).unwrap();
        poller.poll().await;
        assert!(set.verify(new.as_bytes()) && !set.verify(newer.as_bytes()));
        std::fs::remove_file(&path).unwrap();
        poller.poll().await;
        assert!(set.verify(new.as_bytes()));
        // A file that comes back after a failed read is loaded again.
        std::fs::write(&path, newer).unwrap();
        poller.poll().await;
        assert!(set.verify(newer.as_bytes()) && !set.verify(new.as_bytes()));
    }
}
