//! Wire types shared by the cellgate gateway and kernel runner: Jupyter messages, the REST
//! models of the Jupyter kernel API, the websocket framings, and the driver protocol spoken
//! between a runner and a language driver.
//!
//! This crate only describes bytes and values; it has no async runtime and no HTTP stack.

pub mod content;
pub mod driver;
pub mod job;
pub mod message;
pub mod model;
pub mod names;
pub mod wire;

pub use content::Content;
pub use message::{Channel, Header, Message};
pub use names::UnknownName;
