//! The coordinator's self-signed TLS identity, its SPKI pin, and the rustls
//! configurations of both ends (TLS 1.3, ALPN `cohort/1`, pin-checking client).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{TransportError, ALPN};

/// Name put in the certificate and sent as SNI (it is not checked: the pin is).
pub const SERVER_NAME: &str = "cohort";

const CERT_FILE: &str = "tls-cert.der";
const KEY_FILE: &str = "tls-key.der";

/// A self-signed certificate and its PKCS#8 private key.
#[derive(Clone)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    pin: [u8; 32],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("pin", &hex::encode(self.pin)).finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed identity (ECDSA P-256).
    pub fn generate() -> Result<Identity, TransportError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| TransportError::Tls(format!("cannot generate certificate: {e}")))?;
        let cert = certified.cert.der().clone();
        let key = certified.signing_key.serialize_der();
        Identity::from_der(cert.to_vec(), key)
    }

    /// An identity from a DER certificate and a PKCS#8 DER private key.
    pub fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Result<Identity, TransportError> {
        let pin = spki_pin(&cert)?;
        // Check now that rustls accepts the pair, rather than at bind time.
        let identity = Identity { cert: CertificateDer::from(cert), key, pin };
        identity.server_crypto()?;
        Ok(identity)
    }

    /// Loads the identity kept in `dir`, or creates and stores one (files readable by
    /// the owner only), so that the coordinator's URI survives restarts.
    pub fn load_or_create(dir: &Path) -> Result<Identity, TransportError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            let cert = std::fs::read(&cert_path)
                .map_err(|e| TransportError::io(format!("reading {}", cert_path.display()), e))?;
            let key = std::fs::read(&key_path)
                .map_err(|e| TransportError::io(format!("reading {}", key_path.display()), e))?;
            return Identity::from_der(cert, key);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| TransportError::io(format!("creating {}", dir.display()), e))?;
        let identity = Identity::generate()?;
        write_private(&key_path, &identity.key)?;
        write_private(&cert_path, &identity.cert)?;
        Ok(identity)
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub fn pin(&self) -> [u8; 32] {
        self.pin
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// The rustls server configuration: TLS 1.3, ALPN `cohort/1`, no client auth.
    pub fn server_crypto(&self) -> Result<rustls::ServerConfig, TransportError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .map_err(|e| TransportError::Tls(format!("certificate or key refused: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// Writes a file readable and writable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| TransportError::io(format!("creating {}", path.display()), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| TransportError::io(format!("writing {}", path.display()), e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of the DER SubjectPublicKeyInfo inside a DER X.509 certificate.
pub fn spki_pin(cert_der: &[u8]) -> Result<[u8; 32], TransportError> {
    let spki = spki(cert_der)
        .ok_or_else(|| TransportError::Tls("certificate is not valid DER x.509".into()))?;
    Ok(Sha256::digest(spki).into())
}

/// One DER element: (tag, whole element, contents, rest).
type DerElement<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_element(input: &[u8]) -> Option<DerElement<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    let header = input.len() - rest.len();
    let whole = input.get(..header + len)?;
    Some((tag, whole, contents, after))
}

/// Walks `Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version?, serial, sigAlg, issuer,
/// validity, subject, subjectPublicKeyInfo, ... }, ... }` to the SPKI element.
fn spki(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, _, cert_contents, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, tbs, _) = der_element(cert_contents)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serial, signature algorithm, issuer, validity, subject
    for _ in 0..5 {
        let (_, _, _, after) = der_element(rest)?;
        rest = after;
    }
    let (tag, whole, _, _) = der_element(rest)?;
    (tag == SEQUENCE).then_some(whole)
}

/// What the pin verifier saw, so that a failed handshake can be reported as a pin
/// mismatch rather than a generic TLS alert.
#[derive(Debug, Default)]
pub(crate) struct PinReport {
    pub(crate) mismatch: Mutex<Option<String>>,
}

/// Accepts exactly the certificate whose SPKI hashes to the pin.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    report: Arc<PinReport>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = match spki_pin(end_entity) {
            Ok(pin) if pin == self.pin => return Ok(ServerCertVerified::assertion()),
            Ok(pin) => hex::encode(pin),
            Err(e) => e.to_string(),
        };
        if let Ok(mut slot) = self.report.mismatch.lock() {
            *slot = Some(got.clone());
        }
        Err(rustls::Error::General(format!(
            "certificate pin mismatch: expected {}, got {got}",
            hex::encode(self.pin)
        )))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for a coordinator with this pin, and where its
/// verifier reports a mismatch.
pub(crate) fn client_crypto(
    pin: [u8; 32],
) -> Result<(rustls::ClientConfig, Arc<PinReport>), TransportError> {
    let provider = provider();
    let report = Arc::new(PinReport::default());
    let verifier = PinVerifier { pin, provider: provider.clone(), report: report.clone() };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_sha256_of_the_spki() {
        let certified = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let expected: [u8; 32] =
            Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&certified.signing_key))
                .into();
        assert_eq!(spki_pin(certified.cert.der()).unwrap(), expected);
        assert!(spki_pin(&[0x30, 0x05, 1, 2]).is_err());
        assert!(spki_pin(&[]).is_err());
        // Every truncation of a valid certificate is refused or yields a pin, never panics.
        let der = certified.cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = spki_pin(&der[..cut]);
        }
    }

    #[test]
    fn identity_persists() {
        let dir = std::env::temp_dir().join(format!("cohort-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Identity::load_or_create(&dir).unwrap();
        let b = Identity::load_or_create(&dir).unwrap();
        assert_eq!(a.pin(), b.pin());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
