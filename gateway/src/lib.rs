//! The cellgate gateway: the TLS edge in front of the kernel runners.
//!
//! It terminates TLS, authenticates every request with the gateway token, serves the Jupyter
//! kernel REST and websocket API by forwarding each call to the runner that owns the kernel,
//! places new kernels on the least loaded healthy runner, and serves a small web UI with a
//! view of the whole cluster.
//!
//! The library is what the `cellgate-gateway` binary and the all-in-one `cellgate serve` both
//! call: build a [`GatewayConfig`], [`load_tls`], bind a listener, then [`run`] until shutdown.

mod api;
mod auth;
mod balancer;
pub mod cli;
mod cluster;
mod config;
mod connection;
mod error;
mod metrics;
mod pages;
mod proxy;
mod response;
mod router;
mod routes;
mod server;
mod state;
mod tasks;
mod tls;
mod workers;

pub use balancer::discovery::{Discovery, Dns, Resolve, StaticList, SystemResolver};
pub use config::{
    GatewayConfig, HealthSettings, JobsSettings, RunnerSource, Timeouts, TlsSettings,
    WebsocketSettings,
};
pub use error::{ErrorKind, GatewayError};
pub use server::run;
pub use tls::reload::{CertificateReloader, Reloaded};
pub use tls::{load_tls, LoadedTls};
