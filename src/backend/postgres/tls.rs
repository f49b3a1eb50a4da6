//! TLS for the PostgreSQL backend (feature `postgres-tls`): rustls with the
//! `ring` provider, through `tokio-postgres-rustls`, the rust-postgres
//! family's rustls connector. No system library is needed.
//!
//! What is verified follows libpq's `sslmode`:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it | not verified |
//! | `require` | always | not verified, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and names the host |
//!
//! Unverified TLS (as in libpq) protects against eavesdropping, not against
//! a server that impersonates another: use `verify-full` across networks
//! you do not control. The handshake's signatures are always checked.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Verify;

/// The connector for `verify`, reading `root_cert` (PEM) if one is named.
pub(super) fn connector(
    verify: Verify,
    root_cert: Option<&str>,
) -> std::result::Result<MakeRustlsConnect, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier = match (verify, root_cert) {
        (Verify::None, _) => Verifier { algorithms, chain: None, names: false },
        (_, None) => {
            return Err("sslmode=verify-ca or verify-full needs sslrootcert=FILE (PEM)".into());
        }
        (verify, Some(file)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read sslrootcert `{file}`: {e}"))?
            {
                let cert = cert.map_err(|e| format!("cannot read sslrootcert `{file}`: {e}"))?;
                roots.add(cert).map_err(|e| format!("sslrootcert `{file}`: {e}"))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("sslrootcert `{file}`: {e}"))?;
            Verifier { algorithms, chain: Some(webpki), names: verify == Verify::Full }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The server-certificate check `sslmode` asks for. The handshake's
/// signatures are checked with the provider's algorithms in every mode, so
/// a peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct Verifier {
    algorithms: WebPkiSupportedAlgorithms,
    /// `None` (`prefer`, `require` without a root certificate): any
    /// certificate; otherwise it must chain to `sslrootcert`.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must also name the host (`verify-full`).
    names: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
