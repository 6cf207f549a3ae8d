//! A throwaway certificate authority for the TLS tests: a CA and the leaf
//! certificates it signs for 127.0.0.1, laid out as in a
//! `kubernetes.io/tls` Secret.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

pub struct TestCa {
    /// The CA certificate, PEM (a Secret's `ca.crt`).
    pub pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM (`tls.crt`, `tls.key`).
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A certificate for `localhost` and `127.0.0.1` with no extended key
    /// usage (good for anything).
    pub fn leaf(&self) -> Leaf {
        self.sign(Vec::new())
    }

    /// A certificate for `localhost` and `127.0.0.1` that allows both
    /// server and client authentication, as a replica needs for mutual TLS
    /// with its peers (cert-manager: `usages: [server auth, client auth]`).
    pub fn peer_leaf(&self) -> Leaf {
        self.sign(vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ])
    }

    fn sign(&self, usages: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf parameters");
        params.extended_key_usages = usages;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
