//! Configuration: the builder and `from_env`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use drasi_lib::StateStoreError;
use drasi_store_protocol::env;
use reqwest::Url;

use crate::provider::RemoteStateStoreProvider;
use crate::token::TokenSource;
use crate::transport::{Transport, TransportConfig};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// How long a call to a replicated store keeps retrying across its URLs
/// (see [`RemoteStateStoreProviderBuilder::failover_timeout`]): a leader
/// election takes 1 to 3 s.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);

enum TokenConfig {
    Inline(String),
    File(PathBuf),
}

enum CaConfig {
    Pem(Vec<u8>),
    File(PathBuf),
}

/// Configures a [`RemoteStateStoreProvider`]. For `token`/`token_file` and
/// `ca_cert_pem`/`ca_file` the last call wins.
pub struct RemoteStateStoreProviderBuilder {
    url: String,
    token: Option<TokenConfig>,
    ca: Option<CaConfig>,
    timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    failover_timeout: Duration,
    batching: bool,
    batch_always: bool,
    caller_runtime: bool,
}

impl fmt::Debug for RemoteStateStoreProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.token {
            None => "none".to_string(),
            Some(TokenConfig::Inline(_)) => "inline (redacted)".to_string(),
            Some(TokenConfig::File(p)) => format!("file {}", p.display()),
        };
        f.debug_struct("RemoteStateStoreProviderBuilder")
            .field("url", &self.url)
            .field("token", &token)
            .field("tls_ca", &self.ca.is_some())
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("failover_timeout", &self.failover_timeout)
            .field("batching", &self.batching)
            .field("requests_on_caller_runtime", &self.caller_runtime)
            .finish()
    }
}

impl RemoteStateStoreProviderBuilder {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            token: None,
            ca: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            batching: true,
            batch_always: false,
            caller_runtime: true,
        }
    }

    /// A fixed bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenConfig::Inline(token.into()));
        self
    }

    /// A file holding the bearer token (e.g. a mounted Secret). It is read
    /// at `build()` and re-read at most once a second, and right after the
    /// server answers 401, so a rotated Secret takes effect without restart.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = Some(TokenConfig::File(path.into()));
        self
    }

    /// PEM certificate(s) of the CA that signed the server's certificate.
    /// When set, only these CAs are trusted for `https` URLs.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(CaConfig::Pem(pem.into()));
        self
    }

    /// Like [`Self::ca_cert_pem`], read from a file at `build()`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(CaConfig::File(path.into()));
        self
    }

    /// Limit for one attempt of one request, from sending it to reading the
    /// whole answer (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit for establishing a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retries after the first attempt (default 3), for failures that are
    /// safe to repeat: connect errors and 503 `unavailable` for every
    /// operation, timeouts and other transport errors only for operations
    /// other than `delete`, `delete_many` and `clear_store`.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// With several URLs (a replicated store): how long, from a call's
    /// first attempt, failures that are safe to repeat keep being retried
    /// (on the next URL, with the same backoff) after `max_retries` is used
    /// up (default 10 s). It covers a leader election with a split vote
    /// and a loaded node to spare, so a failover looks
    /// like a slow call rather than an error. An attempt in flight is not
    /// cut short: each one is still bounded by [`Self::timeout`]. Ignored
    /// with a single URL, which keeps exactly `max_retries`.
    pub fn failover_timeout(mut self, budget: Duration) -> Self {
        self.failover_timeout = budget;
        self
    }

    /// Whether concurrent single-key calls (`get`, `set`, `delete`,
    /// `contains_key`) that pile up behind requests in flight may share one
    /// batch request (default: yes). Each call keeps its own result and its
    /// own durability guarantee either way; without batching every call is
    /// its own request, which costs a round trip (and, for writes, a share
    /// of a commit) per call under concurrency.
    pub fn batching(mut self, enabled: bool) -> Self {
        self.batching = enabled;
        self
    }

    /// Whether a call made on a multi-thread tokio runtime with I/O and
    /// timers enabled sends its request on that runtime (default: yes),
    /// over connections that runtime drives, instead of handing it to the
    /// provider's own I/O runtime and waiting for the answer to be handed
    /// back. The hand-offs cost two thread wake-ups per call, a large share
    /// of a call's latency and CPU on small nodes. Turn it off when callers
    /// block every worker of their runtime while waiting for a call.
    /// Current-thread runtimes and callers outside tokio always use the
    /// provider's runtime.
    pub fn requests_on_caller_runtime(mut self, enabled: bool) -> Self {
        self.caller_runtime = enabled;
        self
    }

    /// Sends every `get`, `set`, `delete` and `contains_key` (up to 64 KiB)
    /// through the batch route, even when nothing else is in flight. That only adds
    /// work at low concurrency; it exists so tests can hold the batch path
    /// to the same contract as the single-key routes.
    #[doc(hidden)]
    pub fn batch_every_call(mut self, yes: bool) -> Self {
        self.batch_always = yes;
        self
    }

    /// Validates the configuration, reads the token and CA files, and
    /// starts the provider's I/O runtime. Connects lazily: a server that is
    /// down now does not make this fail.
    pub fn build(self) -> Result<RemoteStateStoreProvider, StateStoreError> {
        let transport = self.build_transport()?;
        transport.prefetch_durability();
        Ok(RemoteStateStoreProvider::from_transport(transport))
    }

    /// Everything `build` does, for any provider that talks to the server
    /// (the state store and the write-ahead log share this).
    pub(crate) fn build_transport(self) -> Result<Transport, StateStoreError> {
        let bases = parse_base_urls(&self.url).map_err(config_error)?;
        let server = bases.join(",");
        let token = match self.token {
            None => TokenSource::None,
            Some(TokenConfig::Inline(t)) => {
                TokenSource::inline(&t).map_err(|e| config_error(format!("bearer token: {e}")))?
            }
            Some(TokenConfig::File(path)) => TokenSource::file(path).map_err(config_error)?,
        };
        let ca_certs = match self.ca {
            None => Vec::new(),
            Some(CaConfig::Pem(pem)) => {
                parse_ca(&pem, "the CA certificate").map_err(config_error)?
            }
            Some(CaConfig::File(path)) => {
                let what = format!("CA file {}", path.display());
                let pem = std::fs::read(&path)
                    .map_err(|e| config_error(format!("cannot read {what}: {e}")))?;
                parse_ca(&pem, &what).map_err(config_error)?
            }
        };
        let transport = Transport::new(TransportConfig {
            bases,
            server,
            token,
            ca_certs,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            max_retries: self.max_retries,
            failover_timeout: self.failover_timeout,
            batching: self.batching,
            batch_always: self.batch_always,
            caller_runtime: self.caller_runtime,
        })
        .map_err(config_error)?;
        Ok(transport)
    }
}

impl RemoteStateStoreProvider {
    /// Configures the provider from the environment, as written by the
    /// operator into the `<name>-connection` Secret:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `DRASI_STATE_STORE_URL` | required, `http://…` or `https://…`; for a replicated store several, comma-separated (see [`Self::builder`]) |
    /// | `DRASI_STATE_STORE_TOKEN` | bearer token, inline |
    /// | `DRASI_STATE_STORE_TOKEN_FILE` | file holding the token (its first line that is not blank or a `#` comment), re-read when it changes |
    /// | `DRASI_STATE_STORE_CA_CERT` | PEM of the server's CA, inline (TLS only) |
    /// | `DRASI_STATE_STORE_CA_FILE` | file holding that PEM |
    ///
    /// Empty variables count as unset. When both the inline and the file
    /// form are set, the file wins: it is the one that follows a rotated
    /// Secret, while an env var is frozen at pod start. Errors name the
    /// variable, never its value.
    pub fn from_env() -> Result<Self, StateStoreError> {
        from_lookup(|name| std::env::var_os(name))?.build()
    }
}

/// `from_env` without touching the process environment, for tests.
pub(crate) fn from_lookup(
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<RemoteStateStoreProviderBuilder, StateStoreError> {
    let var = |name: &str| -> Result<Option<String>, StateStoreError> {
        match lookup(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .into_string()
                .map(Some)
                .map_err(|_| config_error(format!("{name} is not valid UTF-8"))),
        }
    };
    let path = |name: &str| -> Option<PathBuf> {
        lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from)
    };

    let url = var(env::URL)?.ok_or_else(|| {
        config_error(format!(
            "{} is not set; it must hold the server URL, e.g. http://my-store.my-namespace.svc:7070",
            env::URL
        ))
    })?;
    parse_base_urls(&url).map_err(|e| config_error(format!("{}: {e}", env::URL)))?;
    let mut builder = RemoteStateStoreProvider::builder(url);

    if let Some(file) = path(env::TOKEN_FILE) {
        builder = builder.token_file(file);
    } else if let Some(token) = var(env::TOKEN)? {
        if token.trim().is_empty() {
            return Err(config_error(format!("{} is blank", env::TOKEN)));
        }
        builder = builder.token(token);
    }

    if let Some(file) = path(env::CA_FILE) {
        builder = builder.ca_file(file);
    } else if let Some(pem) = var(env::CA_CERT)? {
        parse_ca(pem.as_bytes(), env::CA_CERT).map_err(config_error)?;
        builder = builder.ca_cert_pem(pem.into_bytes());
    }
    Ok(builder)
}

fn config_error(message: impl fmt::Display) -> StateStoreError {
    StateStoreError::Other(format!("remote state store configuration: {message}"))
}

/// Splits a comma-separated list of server URLs (one per node of a
/// replicated store, or a single one) into request bases. Every entry must
/// pass [`parse_base_url`], all must share one scheme (the TLS settings
/// apply to all of them) and none may repeat. Errors name the bad entry by
/// its position, never by its text.
fn parse_base_urls(urls: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = urls.split(',').map(str::trim).collect();
    let count = parts.len();
    let which = |i: usize| {
        if count == 1 {
            "the URL".to_string()
        } else {
            format!("URL {} of {count}", i + 1)
        }
    };
    let mut bases: Vec<String> = Vec::with_capacity(count);
    for (i, part) in parts.into_iter().enumerate() {
        if part.is_empty() {
            return Err(format!(
                "{} is empty (separate URLs with single commas)",
                which(i)
            ));
        }
        let (base, _) = parse_base_url(part).map_err(|e| format!("{}: {e}", which(i)))?;
        if let Some(first) = bases.first()
            && scheme(first) != scheme(&base)
        {
            return Err(format!(
                "{} uses {} but URL 1 uses {}; all URLs of one store must use the same scheme",
                which(i),
                scheme(&base),
                scheme(first)
            ));
        }
        if let Some(j) = bases.iter().position(|b| *b == base) {
            return Err(format!("{} repeats URL {}", which(i), j + 1));
        }
        bases.push(base);
    }
    Ok(bases)
}

fn scheme(base: &str) -> &str {
    base.split_once(':').map_or(base, |(scheme, _)| scheme)
}

/// Returns the base for request URLs (no trailing slash) and a form safe to
/// put in messages. Never echoes the input: it may hold credentials.
fn parse_base_url(url: &str) -> Result<(String, String), String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported URL scheme `{other}` (use http or https)"
            ));
        }
    }
    if parsed.host_str().is_none() {
        return Err("the URL has no host".to_string());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not contain credentials; use a bearer token instead".to_string());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("the URL must not have a query or fragment".to_string());
    }
    let base = parsed.as_str().trim_end_matches('/').to_string();
    Ok((base.clone(), base))
}

fn parse_ca(pem: &[u8], what: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        // reqwest's error here is a bare "builder error"; say what it means.
        .map_err(|_| format!("{what} is not a valid PEM certificate bundle"))?;
    if certs.is_empty() {
        return Err(format!("{what} contains no PEM certificate"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn err_text(r: Result<RemoteStateStoreProviderBuilder, StateStoreError>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn url_is_required_and_named() {
        let text = err_text(from_lookup(lookup(&[])));
        assert!(text.contains("DRASI_STATE_STORE_URL is not set"), "{text}");
        let text = err_text(from_lookup(lookup(&[(env::URL, "")])));
        assert!(text.contains("DRASI_STATE_STORE_URL"), "{text}");
    }

    #[test]
    fn bad_url_names_the_variable_not_the_value() {
        let text = err_text(from_lookup(lookup(&[(env::URL, "ftp://secret-host")])));
        assert!(text.contains("DRASI_STATE_STORE_URL"), "{text}");
        assert!(text.contains("scheme"), "{text}");
        assert!(!text.contains("secret-host"), "{text}");
        let text = err_text(from_lookup(lookup(&[(
            env::URL,
            "http://user:hunter2@host:7070",
        )])));
        assert!(
            text.contains("credentials") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn token_file_wins_over_inline_token() {
        let b = from_lookup(lookup(&[
            (env::URL, "http://h:7070"),
            (env::TOKEN, "inline"),
            (env::TOKEN_FILE, "/run/secrets/token"),
        ]))
        .unwrap();
        assert!(
            matches!(b.token, Some(TokenConfig::File(ref p)) if p == &PathBuf::from("/run/secrets/token"))
        );
        let b = from_lookup(lookup(&[(env::URL, "http://h:7070"), (env::TOKEN, "t")])).unwrap();
        assert!(matches!(b.token, Some(TokenConfig::Inline(ref t)) if t == "t"));
        let b = from_lookup(lookup(&[
            (env::URL, "http://h:7070"),
            (env::TOKEN_FILE, ""),
        ]))
        .unwrap();
        assert!(b.token.is_none());
    }

    #[test]
    fn blank_token_and_bad_ca_are_rejected_by_name() {
        let text = err_text(from_lookup(lookup(&[
            (env::URL, "http://h:7070"),
            (env::TOKEN, "  "),
        ])));
        assert!(text.contains("DRASI_STATE_STORE_TOKEN is blank"), "{text}");
        let text = err_text(from_lookup(lookup(&[
            (env::URL, "https://h:7070"),
            (env::CA_CERT, "not a pem"),
        ])));
        assert!(text.contains("DRASI_STATE_STORE_CA_CERT"), "{text}");
        assert!(!text.contains("not a pem"), "{text}");
    }

    #[test]
    fn missing_token_file_fails_at_build_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-token");
        let err = RemoteStateStoreProvider::builder("http://127.0.0.1:1")
            .token_file(&path)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn base_url_loses_trailing_slash_and_keeps_prefix() {
        assert_eq!(parse_base_url("http://h:7070/").unwrap().0, "http://h:7070");
        assert_eq!(
            parse_base_url("https://h/store/").unwrap().0,
            "https://h/store"
        );
        assert!(parse_base_url("http://h:7070/?x=1").is_err());
        assert!(parse_base_url("h:7070").is_err());
    }

    #[test]
    fn several_urls_are_split_trimmed_and_normalized() {
        assert_eq!(
            parse_base_urls(" http://a:7070/ ,http://b:7070,  http://c:7070/x/ ").unwrap(),
            ["http://a:7070", "http://b:7070", "http://c:7070/x"]
        );
        assert_eq!(
            parse_base_urls("https://only:7070").unwrap(),
            ["https://only:7070"]
        );
    }

    #[test]
    fn a_bad_url_in_a_list_is_named_by_position_not_text() {
        let cases = [
            ("http://a:7070,ftp://secret-b", "URL 2 of 2", "scheme"),
            ("http://a:7070,,http://c:7070", "URL 2 of 3 is empty", ""),
            ("http://a:7070,", "URL 2 of 2 is empty", ""),
            ("http://a:7070,not a url", "URL 2 of 2", "not a valid URL"),
            (
                "http://a:7070,http://user:secret-pw@b:7070",
                "URL 2 of 2",
                "credentials",
            ),
            (
                "http://a:7070,https://secret-b:7070",
                "URL 2 of 2 uses https but URL 1 uses http",
                "same scheme",
            ),
            (
                "http://a:7070,http://a:7070/",
                "URL 2 of 2 repeats URL 1",
                "",
            ),
            (
                "http://a:7070/?secret=1,http://b:7070",
                "URL 1 of 2",
                "query",
            ),
        ];
        for (input, names, says) in cases {
            let err = parse_base_urls(input).expect_err(input);
            assert!(err.contains(names), "{input}: {err}");
            assert!(err.contains(says), "{input}: {err}");
            assert!(!err.contains("secret"), "{input}: {err}");
        }
        // The same check guards from_env, under the variable's name.
        let text = err_text(from_lookup(lookup(&[(
            env::URL,
            "http://a:7070, ftp://secret-b",
        )])));
        assert!(
            text.contains("DRASI_STATE_STORE_URL: URL 2 of 2") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn several_urls_build_one_provider() {
        let provider = RemoteStateStoreProvider::builder("http://127.0.0.1:1, http://127.0.0.1:2/")
            .failover_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(
            provider.server_url(),
            "http://127.0.0.1:1,http://127.0.0.1:2"
        );
        let err = RemoteStateStoreProvider::builder("http://127.0.0.1:1,https://127.0.0.1:2")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("URL 2 of 2 uses https"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = RemoteStateStoreProvider::builder("http://h:7070").token("s3cr3t-token");
        assert!(!format!("{b:?}").contains("s3cr3t"));
        let p = b.build().unwrap();
        let text = format!("{p:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("http://h:7070"), "{text}");
    }
}
