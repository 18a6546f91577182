//! Where the runners are: a fixed list, or every address a DNS name resolves to (Swarm's
//! `tasks.<service>` with `endpoint_mode: dnsrr`), asked again every few seconds so runners
//! join and leave without a gateway restart.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use url::Url;

use crate::error::GatewayError;

/// A source of runner URLs. The balancer takes each answer as the complete current set.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    async fn discover(&self) -> Result<Vec<Url>, GatewayError>;

    /// Whether asking again can give another answer; a fixed list is asked once.
    fn changes(&self) -> bool {
        true
    }

    /// Names the source in logs and `--help`-like messages.
    fn describe(&self) -> String;
}

/// The runners given on the command line.
#[derive(Debug, Clone)]
pub struct StaticList(pub Vec<Url>);

#[async_trait]
impl Discovery for StaticList {
    async fn discover(&self) -> Result<Vec<Url>, GatewayError> {
        Ok(self.0.clone())
    }

    fn changes(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let urls: Vec<&str> = self.0.iter().map(Url::as_str).collect();
        format!("runners {}", urls.join(", "))
    }
}

/// Turns a host name into addresses; the system resolver in production, a scripted one in
/// tests.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system's resolver, through tokio's `lookup_host` (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Every address of `host`, each one a runner on `port`.
#[derive(Clone)]
pub struct Dns {
    host: String,
    port: u16,
    resolver: Arc<dyn Resolve>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Dns {
    pub fn new(host: impl Into<String>, port: u16, resolver: Arc<dyn Resolve>) -> Dns {
        Dns {
            host: host.into(),
            port,
            resolver,
        }
    }

    /// `NAME:PORT`, as `--runner-dns` takes it.
    pub fn parse(text: &str) -> Result<(String, u16), String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not NAME:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(format!("{text:?} is not NAME:PORT"));
        }
        Ok((host.to_owned(), port))
    }
}

#[async_trait]
impl Discovery for Dns {
    async fn discover(&self) -> Result<Vec<Url>, GatewayError> {
        let addresses = self
            .resolver
            .resolve(&self.host, self.port)
            .await
            .map_err(|source| GatewayError::RunnerDns {
                name: format!("{}:{}", self.host, self.port),
                source,
            })?;
        let mut urls: Vec<Url> = addresses.into_iter().filter_map(runner_url).collect();
        // A stable order keeps ties in placement and the order of merged answers steady.
        urls.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        urls.dedup();
        Ok(urls)
    }

    fn describe(&self) -> String {
        format!("runners at every address of {}:{}", self.host, self.port)
    }
}

fn runner_url(address: SocketAddr) -> Option<Url> {
    let host = match address.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    Url::parse(&format!("http://{host}:{}", address.port())).ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A resolver that answers what the test last told it.
    pub struct Scripted(pub Mutex<io::Result<Vec<SocketAddr>>>);

    #[async_trait]
    impl Resolve for Scripted {
        async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            match &*self.0.lock().unwrap() {
                Ok(addresses) => Ok(addresses.clone()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn every_address_of_the_name_is_a_runner() {
        let resolver = Arc::new(Scripted(Mutex::new(Ok(vec![
            "10.0.0.7:9000".parse().unwrap(),
            "10.0.0.5:9000".parse().unwrap(),
            "10.0.0.7:9000".parse().unwrap(),
            "[fd00::1]:9000".parse().unwrap(),
        ]))));
        let dns = Dns::new("tasks.kernel-runner", 9000, resolver.clone());
        let urls: Vec<String> = dns
            .discover()
            .await
            .unwrap()
            .iter()
            .map(|url| url.to_string())
            .collect();
        assert_eq!(
            urls,
            vec![
                "http://10.0.0.5:9000/",
                "http://10.0.0.7:9000/",
                "http://[fd00::1]:9000/"
            ]
        );
        *resolver.0.lock().unwrap() = Err(io::Error::other("no such name"));
        assert!(matches!(
            dns.discover().await,
            Err(GatewayError::RunnerDns { .. })
        ));
    }

    #[test]
    fn runner_dns_names_need_a_port() {
        assert_eq!(
            Dns::parse("tasks.kernel-runner:9000"),
            Ok(("tasks.kernel-runner".to_owned(), 9000))
        );
        assert_eq!(Dns::parse("[::1]:9000"), Ok(("::1".to_owned(), 9000)));
        assert!(Dns::parse("tasks.kernel-runner").is_err());
        assert!(Dns::parse(":9000").is_err());
        assert!(Dns::parse("runner:http").is_err());
    }
}
