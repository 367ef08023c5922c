//! Test certificates made with `rcgen`: a self-signed CA and a server certificate for
//! `localhost` and `127.0.0.1` signed by it, plus a `rustls::ServerConfig` built from them
//! with the `ring` provider passed explicitly (no process-default provider is needed).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM material of a test CA and of a server certificate signed by it.
#[derive(Clone, Debug)]
pub struct TestCerts {
    /// The self-signed CA certificate (PEM). Clients trust this.
    pub ca_cert_pem: String,
    /// The server certificate (PEM), SANs `localhost` and `127.0.0.1`, signed by the CA.
    pub server_cert_pem: String,
    /// The server private key (PKCS#8 PEM).
    pub server_key_pem: String,
}

impl TestCerts {
    /// Generates a fresh CA and a server certificate for `localhost` + `127.0.0.1`.
    pub fn generate() -> TestCerts {
        generate_certs(&["localhost", "127.0.0.1"])
    }

    /// Server certificate followed by the CA certificate, as one PEM chain.
    pub fn server_chain_pem(&self) -> String {
        format!("{}{}", self.server_cert_pem, self.ca_cert_pem)
    }

    /// A `rustls::ServerConfig` serving this certificate with ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        server_config(&self.server_cert_pem, &self.server_key_pem)
    }

    /// A `rustls::ClientConfig` trusting only this CA (ALPN `http/1.1`).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca_cert_pem)
    }
}

/// Generates a CA and a server certificate with the given SANs (DNS names or IP addresses).
pub fn generate_certs(subject_alt_names: &[&str]) -> TestCerts {
    // CA.
    let ca_key = KeyPair::generate().expect("generate CA key pair");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "tenant-authz test CA");
    ca_dn.push(DnType::OrganizationName, "tenant-authz tests");
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .expect("self-sign the CA certificate");
    let ca_issuer = Issuer::new(ca_params, ca_key);

    // Server certificate.
    let server_key = KeyPair::generate().expect("generate server key pair");
    let sans: Vec<String> = subject_alt_names.iter().map(|s| s.to_string()).collect();
    let mut server_params = CertificateParams::new(sans).expect("server certificate params");
    let mut server_dn = DistinguishedName::new();
    server_dn.push(
        DnType::CommonName,
        subject_alt_names.first().copied().unwrap_or("localhost"),
    );
    server_params.distinguished_name = server_dn;
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params
        .signed_by(&server_key, &ca_issuer)
        .expect("sign the server certificate with the CA");

    TestCerts {
        ca_cert_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// Generates `(ca_cert_pem, server_cert_pem, server_key_pem)` for `localhost` + `127.0.0.1`.
pub fn generate() -> (String, String, String) {
    let certs = TestCerts::generate();
    (
        certs.ca_cert_pem,
        certs.server_cert_pem,
        certs.server_key_pem,
    )
}

/// Parses all certificates of a PEM string.
pub fn certs_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("parse PEM certificates")
}

/// Parses the private key of a PEM string.
pub fn key_from_pem(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("parse PEM private key")
}

/// Builds a `rustls::ServerConfig` (ring provider, TLS 1.2 + 1.3, no client auth) serving
/// `cert_chain_pem` with `key_pem`, advertising ALPN `h2` then `http/1.1`.
pub fn server_config(cert_chain_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs_from_pem(cert_chain_pem), key_from_pem(key_pem))
        .expect("server certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Builds a `rustls::ClientConfig` (ring provider) that trusts only `ca_pem`, ALPN `http/1.1`.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(ca_pem) {
        roots
            .add(cert)
            .expect("add CA certificate to the root store");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
