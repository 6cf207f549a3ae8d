//! TLS with rustls and the ring provider, from PEM files that are reloaded
//! when they change.
//!
//! cert-manager renews the certificate in the Secret mounted at
//! `--tls-cert-file`/`--tls-key-file`, and the kubelet swaps the files in
//! place. So, like the token file, the pair is reloaded when its content
//! changes (see [`crate::reload`]), and the certificate resolver hands
//! every new handshake the latest good pair: renewal needs no restart. A
//! new pair that does not load keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::reload::Reload;

/// The certificate resolver: always the latest pair that loaded.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// The raw content of both files, to notice changes cheaply.
#[derive(PartialEq, Eq)]
pub(crate) struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A node presents its own (reloaded) certificate as a client too, when
/// it calls its peers over mutual TLS.
impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ReloadingCert {
    /// Loads the pair; any problem is an error that names the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let snapshot = read_snapshot(cert_file, key_file)?;
        let key = certified_key(&snapshot, cert_file, key_file, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// The latest pair that loaded.
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The client port's acceptor: resolves through `self`, asks clients
    /// for no certificate.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        self.acceptor_verifying(WebPkiClientVerifier::no_client_auth())
    }

    /// The peer listener's acceptor: like [`Self::acceptor`], and every
    /// client must present a certificate `roots` verify (mutual TLS).
    pub fn peer_acceptor(
        self: &Arc<Self>,
        roots: Arc<RootCertStore>,
    ) -> anyhow::Result<TlsAcceptor> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .context("configuring the verification of peer certificates")?;
        self.acceptor_verifying(verifier)
    }

    fn acceptor_verifying(
        self: &Arc<Self>,
        clients: Arc<dyn ClientCertVerifier>,
    ) -> anyhow::Result<TlsAcceptor> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("configuring TLS protocol versions")?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// What a node calls its peers with: it trusts servers `roots` verify
    /// and presents its own certificate.
    pub fn peer_client_config(
        self: &Arc<Self>,
        roots: Arc<RootCertStore>,
    ) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("configuring TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The CA certificates in a PEM file (`--peer-tls-ca-file`): at least one,
/// each accepted as a trust anchor.
pub fn load_roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
        roots.add(cert).with_context(|| {
            format!(
                "{} holds a certificate that is not a usable CA",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(Arc::new(roots))
}

impl Reload for ReloadingCert {
    type Content = Snapshot;
    const WHAT: &'static str = "TLS certificate or key";

    fn read(&self) -> anyhow::Result<Snapshot> {
        read_snapshot(&self.cert_file, &self.key_file)
    }

    fn install(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let key = certified_key(snapshot, &self.cert_file, &self.key_file, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        tracing::info!(
            cert_file = %self.cert_file.display(),
            key_file = %self.key_file.display(),
            "reloaded the TLS certificate; new connections use it"
        );
        Ok(())
    }
}

fn read_snapshot(cert_file: &Path, key_file: &Path) -> anyhow::Result<Snapshot> {
    let cert = std::fs::read(cert_file)
        .with_context(|| format!("reading TLS certificate {}", cert_file.display()))?;
    let key = std::fs::read(key_file)
        .with_context(|| format!("reading TLS key {}", key_file.display()))?;
    Ok(Snapshot { cert, key })
}

/// Parses the pair and checks that the key belongs to the certificate.
/// Error messages name files and causes, never PEM or key material.
fn certified_key(
    snapshot: &Snapshot,
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_slice_iter(&snapshot.cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert_file.display());
    }
    let key = match PrivateKeyDer::from_pem_slice(&snapshot.key) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            anyhow::bail!("{} holds no PEM private key", key_file.display())
        }
        Err(err) => {
            return Err(err).with_context(|| format!("parsing TLS key {}", key_file.display()));
        }
    };
    // `from_der` is what `with_single_cert` uses: it loads the key and
    // rejects one whose public half differs from the certificate's.
    CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!(
            "TLS certificate {} and key {} do not form a usable pair",
            cert_file.display(),
            key_file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::Poller;

    struct Pair {
        cert: String,
        key: String,
    }

    fn pair() -> Pair {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        Pair {
            cert: c.cert.pem(),
            key: c.key_pair.serialize_pem(),
        }
    }

    fn current_der(r: &ReloadingCert) -> Vec<u8> {
        r.current().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn reload_swaps_good_pairs_and_keeps_the_current_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (a, b) = (pair(), pair());
        std::fs::write(&cert, &a.cert).unwrap();
        std::fs::write(&key, &a.key).unwrap();
        let r = ReloadingCert::load(&cert, &key).unwrap();
        let mut poller = Poller::new(r.clone());
        assert_eq!(current_der(&r), der(&a.cert));

        // Certificate B with key A: mismatch, A stays.
        std::fs::write(&cert, &b.cert).unwrap();
        poller.poll().await;
        assert_eq!(current_der(&r), der(&a.cert));
        // The key arrives: B is taken.
        std::fs::write(&key, &b.key).unwrap();
        poller.poll().await;
        assert_eq!(current_der(&r), der(&b.cert));

        // Garbage, an empty file and a missing file all keep B.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        poller.poll().await;
        std::fs::write(&cert, "").unwrap();
        poller.poll().await;
        std::fs::remove_file(&key).unwrap();
        poller.poll().await;
        assert_eq!(current_der(&r), der(&b.cert));
    }

    #[test]
    fn load_fails_clearly_on_a_bad_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (a, b) = (pair(), pair());
        std::fs::write(&cert, &a.cert).unwrap();
        std::fs::write(&key, &b.key).unwrap();
        let err = format!("{:#}", ReloadingCert::load(&cert, &key).unwrap_err());
        assert!(err.contains("do not form a usable pair"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "key material in {err}");

        std::fs::write(&cert, "nothing here").unwrap();
        let err = format!("{:#}", ReloadingCert::load(&cert, &key).unwrap_err());
        assert!(err.contains("holds no PEM certificate"), "{err}");

        std::fs::write(&cert, &a.cert).unwrap();
        std::fs::write(&key, "").unwrap();
        let err = format!("{:#}", ReloadingCert::load(&cert, &key).unwrap_err());
        assert!(err.contains("holds no PEM private key"), "{err}");
    }
}
