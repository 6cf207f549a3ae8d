//! Redaction of credentials from everything `report` writes.
//!
//! Two layers: the store's actual token values (read from its Secrets) are
//! replaced wherever they appear, as text and base64 (a Secret's `data`
//! encoding); and values that look like credentials are replaced whatever
//! they are: the value after a key ending in `token` (`token: x`,
//! `DRASI_STATE_STORE_TOKEN=x`, `"accessToken":"x"`), the rest of an
//! `Authorization` value, and a long word after `Bearer`.

use k8s_openapi::ByteString;

pub const REDACTED: &str = "[REDACTED]";

/// Shortest token the server accepts; a shorter word after `Bearer` is
/// prose ("a bearer token"), not a credential.
const MIN_BEARER_LEN: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Known secret values, longest first so a token containing another is
    /// replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut all = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref().trim();
            if secret.is_empty() {
                continue;
            }
            all.push(secret.to_string());
            if let Some(b64) = base64(secret.as_bytes()) {
                all.push(b64);
            }
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Self { secrets: all }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), REDACTED);
        }
        let out = redact_key_values(&out);
        redact_bearer(&out)
    }
}

/// Base64 as the API server writes a Secret's `data`.
fn base64(bytes: &[u8]) -> Option<String> {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Replaces the value after `…token` keys and `Authorization` keys.
fn redact_key_values(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        out.push_str(&key);
        let lower = key.to_ascii_lowercase();
        let authorization = lower == "authorization";
        if !(lower.ends_with("token") || authorization) {
            continue;
        }
        // `key"?\s*[:=]\s*["']?value`
        let mut j = i;
        if j < chars.len() && matches!(chars[j], '"' | '\'') {
            j += 1;
        }
        while j < chars.len() && matches!(chars[j], ' ' | '\t') {
            j += 1;
        }
        if j >= chars.len() || !matches!(chars[j], ':' | '=') {
            continue;
        }
        j += 1;
        while j < chars.len() && matches!(chars[j], ' ' | '\t') {
            j += 1;
        }
        if j < chars.len() && matches!(chars[j], '"' | '\'') {
            j += 1;
        }
        let value_start = j;
        let ends_value = |c: char| {
            if authorization {
                matches!(c, '\n' | '\r' | '"' | '\'')
            } else {
                c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ';')
            }
        };
        while j < chars.len() && !ends_value(chars[j]) {
            j += 1;
        }
        let value: String = chars[value_start..j].iter().collect();
        if value.trim().is_empty() || value.trim() == REDACTED {
            continue;
        }
        out.extend(&chars[i..value_start]);
        out.push_str(REDACTED);
        i = j;
    }
    out
}

/// Replaces a credential-length word after `Bearer ` (any case).
fn redact_bearer(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("bearer") {
        let after = search + found + "bearer".len();
        let value_start =
            after + text[after..].len() - text[after..].trim_start_matches([' ', '\t']).len();
        let value_len = text[value_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .unwrap_or(text.len() - value_start);
        if value_start > after && value_len >= MIN_BEARER_LEN {
            out.push_str(&text[rest..value_start]);
            out.push_str(REDACTED);
            rest = value_start + value_len;
        }
        search = (value_start + value_len).max(after);
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cr3t-t0ken-0123456789abcdef";

    #[test]
    fn known_tokens_are_replaced_as_text_and_base64() {
        let r = Redactor::new([TOKEN]);
        let b64 = base64(TOKEN.as_bytes()).unwrap();
        let text = format!("log: used {TOKEN} here\nannotation: {b64}\n");
        let out = r.redact(&text);
        assert!(!out.contains(TOKEN) && !out.contains(&b64), "{out}");
        assert_eq!(out, "log: used [REDACTED] here\nannotation: [REDACTED]\n");
    }

    #[test]
    fn token_like_values_are_replaced_without_knowing_them() {
        let r = Redactor::default();
        let cases = [
            (
                "DRASI_STATE_STORE_TOKEN=abc123 next",
                "DRASI_STATE_STORE_TOKEN=[REDACTED] next",
            ),
            (
                "{\"token\":\"abc\",\"x\":1}",
                "{\"token\":\"[REDACTED]\",\"x\":1}",
            ),
            ("  accessToken: 'abc'", "  accessToken: '[REDACTED]'"),
            (
                "Authorization: Basic dXNlcjpwYXNz\nnext",
                "Authorization: [REDACTED]\nnext",
            ),
            (
                "curl -H 'authorization: bearer 0123456789abcdefXYZ' x",
                "curl -H 'authorization: [REDACTED]' x",
            ),
            (
                "got Bearer 0123456789abcdef0123 from",
                "got Bearer [REDACTED] from",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(r.redact(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let r = Redactor::new([TOKEN]);
        for text in [
            "missing bearer token in request",
            "DRASI_STATE_STORE_TOKEN_FILE: /var/run/drasi-state-store/token",
            "loaded auth tokens tokens=2",
            "reason: TokenRotationStarted",
            "token:\n  nested: 1",
            "drasi_store_keys 42",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }
}
