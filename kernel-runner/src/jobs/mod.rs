//! Batch jobs: the store on the shared volume, the worker that claims and runs them, the
//! MD5 service, and the executors for programs.

pub mod container;
pub mod error;
pub mod execute;
pub mod languages;
pub mod md5;
pub mod nodes;
mod outcome;
pub mod output;
pub mod process;
pub mod store;
pub mod worker;

pub use error::JobError;
pub use store::JobStore;
pub use worker::{Worker, WorkerSettings};
