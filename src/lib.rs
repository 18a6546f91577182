//! What the `cellgate` binary shares with its tests and benches: the TLS client
//! configuration for talking to a gateway, including the `--insecure` mode that accepts a
//! self-signed certificate.

pub mod tls_client;
