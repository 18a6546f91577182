//! The gateway's TLS server configuration: the operator's certificate, or a self-signed one
//! made (and optionally kept) by the gateway, and the fingerprint users pin it by. The
//! certificate is served through [`reload::CertificateReloader`], so a renewed one takes
//! effect without a restart.

pub mod reload;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::config::TlsSettings;
use crate::error::GatewayError;
use reload::CertificateReloader;

/// The names every self-signed certificate covers, so local clients can always connect.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// File names of a self-signed certificate kept in the data directory.
const STORED_CERT: &str = "gateway-cert.pem";
const STORED_KEY: &str = "gateway-key.pem";

/// A ready TLS server configuration.
#[derive(Clone)]
pub struct LoadedTls {
    pub server_config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate's DER, as `AA:BB:...`, for users to check or pin.
    pub sha256_fingerprint: String,
    /// Whether the certificate is one the gateway made itself (browsers will warn about it).
    pub self_signed: bool,
    /// Serves the certificate and replaces it when its files change.
    pub certificates: Arc<CertificateReloader>,
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTls")
            .field("sha256_fingerprint", &self.sha256_fingerprint)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

/// Loads or makes the certificate `settings` asks for. `hostnames` are added to a generated
/// certificate's names (besides localhost and the loopback addresses); they are ignored for a
/// certificate read from files. This reads files, so call it before serving.
pub fn load_tls(settings: &TlsSettings, hostnames: &[String]) -> Result<LoadedTls, GatewayError> {
    let (chain, key, self_signed) = match settings {
        TlsSettings::Files { cert, key } => (read_chain(cert)?, read_key(key)?, false),
        TlsSettings::SelfSigned { dir: Some(dir) } => {
            let (cert, key) = stored_self_signed(dir, hostnames)?;
            (cert, key, true)
        }
        TlsSettings::SelfSigned { dir: None } => {
            let generated = generate_self_signed(hostnames)?;
            (vec![generated.cert], generated.key, true)
        }
    };
    // Every branch yields at least one certificate: `read_chain` refuses an empty file.
    let sha256_fingerprint = chain
        .first()
        .map(|leaf| fingerprint(leaf))
        .unwrap_or_default();
    let provider = provider();
    let certified = certified_key(chain, key, &provider)?;
    let files = match settings {
        TlsSettings::Files { cert, key } => Some((cert.clone(), key.clone())),
        TlsSettings::SelfSigned { .. } => None,
    };
    let certificates = Arc::new(CertificateReloader::new(
        certified,
        sha256_fingerprint.clone(),
        files,
        provider.clone(),
    ));
    let server_config = server_config(certificates.clone(), provider)?;
    Ok(LoadedTls {
        server_config,
        sha256_fingerprint,
        self_signed,
        certificates,
    })
}

/// An explicit provider, rather than the process default, so the gateway works whatever
/// other crates in the process install.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A chain and its key, checked to belong together.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, GatewayError> {
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|source| GatewayError::Tls { source })
}

/// `AA:BB:...`: the colon-separated uppercase hex form browsers and `openssl x509
/// -fingerprint -sha256` print.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn server_config(
    certificates: Arc<CertificateReloader>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, GatewayError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| GatewayError::Tls { source })?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    // The gateway speaks HTTP/1.1 only; saying so lets clients skip an HTTP/2 attempt.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Generated {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn generate_self_signed(hostnames: &[String]) -> Result<Generated, GatewayError> {
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|name| name.to_string()).collect();
    for name in hostnames {
        let name = name.trim();
        if !name.is_empty() && !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|source| GatewayError::Certificate { source })?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cellgate gateway (self-signed)");
    let key_pair =
        rcgen::KeyPair::generate().map_err(|source| GatewayError::Certificate { source })?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|source| GatewayError::Certificate { source })?;
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der())),
    })
}

/// The self-signed certificate kept in `dir`, made and saved on the first run.
fn stored_self_signed(
    dir: &Path,
    hostnames: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), GatewayError> {
    let cert_path = dir.join(STORED_CERT);
    let key_path = dir.join(STORED_KEY);
    if cert_path.exists() {
        return Ok((read_chain(&cert_path)?, read_key(&key_path)?));
    }
    let generated = generate_self_signed(hostnames)?;
    fs::create_dir_all(dir).map_err(|source| GatewayError::WriteFile {
        path: dir.to_owned(),
        source,
    })?;
    // The key is written first and the certificate last, so a crash in between leaves no
    // certificate file and the next start simply makes a new pair.
    write_private(&key_path, generated.key_pem.as_bytes())?;
    fs::write(&cert_path, generated.cert_pem.as_bytes()).map_err(|source| {
        GatewayError::WriteFile {
            path: cert_path.clone(),
            source,
        }
    })?;
    Ok((vec![generated.cert], generated.key))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), GatewayError> {
    let failed = |source| GatewayError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(contents).map_err(failed)
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let bytes = read(path)?;
    let chain = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| GatewayError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(GatewayError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|source| GatewayError::ReadFile {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| GatewayError::NoPrivateKey {
            path: path.to_owned(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, GatewayError> {
    fs::read(path).map_err(|source| GatewayError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cellgate-gateway-tls-{name}-{}",
            uuid::Uuid::new_v4()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fingerprints_are_colon_separated_uppercase_sha256() {
        let print = fingerprint(b"abc");
        assert_eq!(print.len(), 32 * 3 - 1);
        assert!(print.starts_with("BA:78:16:BF:8F:01:CF:EA"));
        assert!(print
            .split(':')
            .all(|pair| pair.len() == 2 && pair.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn self_signed_certificates_cover_local_names_and_given_hosts() {
        let generated =
            generate_self_signed(&["gw.example.org".into(), "10.0.0.7".into()]).unwrap();
        let der: &[u8] = generated.cert.as_ref();
        // SANs are stored as raw DNS strings and raw IP bytes in the DER.
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|window| window == needle);
        assert!(contains(b"localhost"));
        assert!(contains(b"gw.example.org"));
        assert!(contains(&[127, 0, 0, 1]));
        assert!(contains(&[10, 0, 0, 7]));
        let loaded = load_tls(&TlsSettings::SelfSigned { dir: None }, &[]).unwrap();
        assert!(loaded.self_signed);
        assert_eq!(loaded.sha256_fingerprint.len(), 95);
        assert_eq!(
            loaded.server_config.alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_stored_self_signed_certificate_keeps_its_fingerprint() {
        let dir = temp_dir("stored");
        let settings = TlsSettings::SelfSigned {
            dir: Some(dir.clone()),
        };
        let first = load_tls(&settings, &[]).unwrap();
        let second = load_tls(&settings, &[]).unwrap();
        assert_eq!(first.sha256_fingerprint, second.sha256_fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(STORED_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the private key must not be group or world readable"
            );
        }
        // The same files given explicitly load as an operator's certificate.
        let files = TlsSettings::Files {
            cert: dir.join(STORED_CERT),
            key: dir.join(STORED_KEY),
        };
        let explicit = load_tls(&files, &[]).unwrap();
        assert_eq!(explicit.sha256_fingerprint, first.sha256_fingerprint);
        assert!(!explicit.self_signed);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_without_pem_blocks_are_reported_by_path() {
        let dir = temp_dir("empty");
        let empty = dir.join("empty.pem");
        fs::write(&empty, "not pem").unwrap();
        let settings = TlsSettings::Files {
            cert: empty.clone(),
            key: empty.clone(),
        };
        match load_tls(&settings, &[]) {
            Err(GatewayError::NoCertificate { path }) => assert_eq!(path, empty),
            other => panic!("expected NoCertificate, got {other:?}"),
        }
        let missing = TlsSettings::Files {
            cert: dir.join("missing.pem"),
            key: empty,
        };
        assert!(matches!(
            load_tls(&missing, &[]),
            Err(GatewayError::ReadFile { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}
