//! The operator-wide image allow-list (`--allowed-images`).
//!
//! `spec.image` is free-form, and the pod it runs mounts the store's token
//! and TLS Secrets, so without a list the right to create a
//! `DrasiStateStore` would be the right to run any image with them. The
//! default allows only the repository of the default server image.
//!
//! A pattern is either a glob where `*` matches any run of characters
//! (`registry.example/drasi/*`), or a repository (`ghcr.io/x/server`)
//! that allows that repository with any tag or digest, and nothing else
//! (`ghcr.io/x/server-evil` is another repository).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePolicy {
    patterns: Vec<String>,
}

impl ImagePolicy {
    /// Patterns as given; blank ones are dropped. An empty list allows no
    /// image at all, which a caller should never build: see
    /// [`ImagePolicy::or_repository_of`].
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            patterns: patterns
                .into_iter()
                .map(|p| p.as_ref().trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// These patterns, or when there are none the repository of `image`.
    pub fn or_repository_of(self, image: &str) -> Self {
        if self.patterns.is_empty() {
            Self::new([repository(image)])
        } else {
            self
        }
    }

    pub fn allows(&self, image: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, image))
    }
}

impl fmt::Display for ImagePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.patterns.join(","))
    }
}

/// The repository of an image reference: without `@digest` and without a
/// `:tag` in its last path segment (a `:port` of the registry stays).
pub fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(repo, _)| repo);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

fn matches(pattern: &str, image: &str) -> bool {
    if pattern.contains('*') {
        glob(pattern.as_bytes(), image.as_bytes())
    } else {
        pattern == image || (repository(pattern) == pattern && repository(image) == pattern)
    }
}

/// `*` matches any run of bytes, every other byte itself. Iterative with one
/// backtrack point, so a hostile pattern cannot take exponential time.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_allows_its_tags_and_digests_only() {
        let policy = ImagePolicy::new(["ghcr.io/drasi-project/drasi-store-server"]);
        assert!(policy.allows("ghcr.io/drasi-project/drasi-store-server:0.1.0"));
        assert!(policy.allows("ghcr.io/drasi-project/drasi-store-server@sha256:abc"));
        assert!(policy.allows("ghcr.io/drasi-project/drasi-store-server"));
        assert!(!policy.allows("ghcr.io/drasi-project/drasi-store-server-evil:1"));
        assert!(!policy.allows("ghcr.io/drasi-project/drasi-store-server/sub:1"));
        assert!(!policy.allows("docker.io/library/busybox:1"));
    }

    #[test]
    fn globs_match_with_stars() {
        let policy = ImagePolicy::new(["registry.local:5000/drasi/*", "*:pinned"]);
        assert!(policy.allows("registry.local:5000/drasi/server:1"));
        assert!(policy.allows("other/x:pinned"));
        assert!(!policy.allows("registry.local:5000/other/server:1"));
        assert!(!policy.allows("other/x:latest"));
        let many = "*a".repeat(20);
        assert!(!ImagePolicy::new([many.as_str()]).allows(&"a".repeat(40).replace("a", "b")));
    }

    #[test]
    fn a_pattern_with_a_tag_allows_that_exact_image() {
        let policy = ImagePolicy::new(["example/server:1.0"]);
        assert!(policy.allows("example/server:1.0"));
        assert!(!policy.allows("example/server:1.1"));
    }

    #[test]
    fn the_default_is_the_repository_of_the_default_image() {
        let policy = ImagePolicy::new(Vec::<String>::new()).or_repository_of("reg:5000/a/b:1.2");
        assert_eq!(policy.to_string(), "reg:5000/a/b");
        assert!(policy.allows("reg:5000/a/b@sha256:00"));
        assert_eq!(repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(repository("b:1@sha256:1"), "b");
    }
}
