//! How the balancer chooses the runner of a new kernel. A policy only sees load snapshots, so
//! it can be read and tested without any networking.

use super::backend::Load;

pub trait Selection: Send + Sync + 'static {
    /// The index in `candidates` of the runner to use, or `None` when none may take a kernel.
    fn select(&self, candidates: &[Load]) -> Option<usize>;
}
