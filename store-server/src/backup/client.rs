//! The HTTP client side of the subcommands that talk to a server.

use std::time::Duration;

use anyhow::Context as _;

use super::ServerArgs;

/// Connecting and getting the answer's headers; a transfer itself has no
/// deadline (a large database takes as long as it takes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl ServerArgs {
    /// The bearer token: the first non-empty line of `--token-file`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        let token = content
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .with_context(|| format!("token file {} contains no token", path.display()))?;
        Ok(Some(token.to_string()))
    }

    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut client = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing certificates in {}", ca.display()))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        client.build().context("building the HTTP client")
    }
}
