//! What the end-to-end tests share: a `cellgate serve` process on ephemeral ports, an HTTPS
//! client for the REST API, and a Jupyter websocket client.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod client;
pub mod cluster;
pub mod docker;
pub mod jobs;
pub mod kernel;
pub mod server;

pub use client::{Client, Reply};
pub use kernel::KernelSocket;
pub use server::Server;
