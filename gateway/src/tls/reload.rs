//! Serving the current certificate and replacing it without a restart: rustls asks
//! [`CertificateReloader`] for the certificate at every handshake, so new connections get a
//! renewed certificate as soon as it is swapped in, while established ones keep the session
//! they negotiated. A reload happens on request (the binaries ask on SIGHUP) and when the
//! files' modification time or size changes; a pair that does not load, or whose key does not
//! match, is logged and the certificate in use stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{certified_key, fingerprint, read_chain, read_key};
use crate::error::{chain, GatewayError};

pub struct CertificateReloader {
    current: RwLock<Current>,
    /// The certificate and key files; `None` for a self-signed certificate, which never
    /// changes while the gateway runs.
    files: Option<(PathBuf, PathBuf)>,
    provider: Arc<CryptoProvider>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

#[derive(Clone)]
struct Current {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A different certificate is served from now on; its SHA-256 fingerprint.
    Replaced { fingerprint: String },
    /// The files hold the certificate already in use.
    Unchanged,
    /// The certificate does not come from files.
    NotFromFiles,
}

impl CertificateReloader {
    pub(super) fn new(
        key: Arc<CertifiedKey>,
        fingerprint: String,
        files: Option<(PathBuf, PathBuf)>,
        provider: Arc<CryptoProvider>,
    ) -> CertificateReloader {
        CertificateReloader {
            current: RwLock::new(Current { key, fingerprint }),
            files,
            provider,
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The SHA-256 fingerprint of the certificate served now.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint
    }

    /// Certificates swapped in, and reloads that failed, since the start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Reads the files again and serves what they hold from the next handshake on. This
    /// reads files: call it from a blocking context (see [`CertificateReloader::reload_async`]).
    pub fn reload(&self) -> Result<Reloaded, GatewayError> {
        let Some((cert, key)) = &self.files else {
            return Ok(Reloaded::NotFromFiles);
        };
        let loaded = read_chain(cert).and_then(|chain| {
            let print = chain
                .first()
                .map(|leaf| fingerprint(leaf))
                .unwrap_or_default();
            let key = certified_key(chain, read_key(key)?, &self.provider)?;
            Ok((key, print))
        });
        let (key, print) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.fingerprint == print {
            return Ok(Reloaded::Unchanged);
        }
        *current = Current {
            key,
            fingerprint: print.clone(),
        };
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(Reloaded::Replaced { fingerprint: print })
    }

    /// [`CertificateReloader::reload`] on a blocking thread, with the outcome logged.
    pub async fn reload_async(self: &Arc<Self>, why: &'static str) {
        let reloader = self.clone();
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(Reloaded::Replaced { fingerprint })) => {
                tracing::info!(%fingerprint, why, "TLS certificate reloaded");
            }
            Ok(Ok(Reloaded::Unchanged)) => {
                tracing::debug!(why, "TLS certificate files unchanged");
            }
            Ok(Ok(Reloaded::NotFromFiles)) => {
                tracing::info!(why, "the TLS certificate is self-signed; nothing to reload");
            }
            Ok(Err(error)) => {
                tracing::error!(error = %chain(&error), why, "TLS certificate reload failed; keeping the current one");
            }
            Err(error) => tracing::error!(%error, "TLS certificate reload panicked"),
        }
    }

    /// Reloads whenever the files change, checking every `interval`, until `stopping`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stopping: CancellationToken) {
        let Some((cert, key)) = self.files.clone() else {
            return;
        };
        let mut last = stamps(&cert, &key).await;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = stamps(&cert, &key).await;
            // A file being replaced may be missing for a moment: wait for it to be back.
            if now != last && now.iter().all(Option::is_some) {
                last = now;
                self.reload_async("certificate files changed").await;
            }
        }
    }

    fn read(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// What identifies a version of a file without reading it: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

async fn stamps(cert: &Path, key: &Path) -> [Stamp; 2] {
    async fn stamp(path: &Path) -> Stamp {
        let metadata = tokio::fs::metadata(path).await.ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    }
    [stamp(cert).await, stamp(key).await]
}

impl ResolvesServerCert for CertificateReloader {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key)
    }
}

impl fmt::Debug for CertificateReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateReloader")
            .field("fingerprint", &self.fingerprint())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsSettings;
    use crate::tls::load_tls;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn a_new_pair_replaces_the_certificate_and_a_bad_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("cellgate-reload-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = write_pair(&dir, "first.example");
        let loaded = load_tls(
            &TlsSettings::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            &[],
        )
        .unwrap();
        let reloader = loaded.certificates;
        assert_eq!(reloader.reload().unwrap(), Reloaded::Unchanged);

        let first = reloader.fingerprint();
        write_pair(&dir, "second.example");
        let Reloaded::Replaced { fingerprint } = reloader.reload().unwrap() else {
            panic!("the new pair was not taken");
        };
        assert_ne!(fingerprint, first);
        assert_eq!(reloader.fingerprint(), fingerprint);

        // A certificate with someone else's key is refused and the served one stays.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        assert!(matches!(reloader.reload(), Err(GatewayError::Tls { .. })));
        assert_eq!(reloader.fingerprint(), fingerprint);
        assert_eq!(reloader.counts(), (1, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
