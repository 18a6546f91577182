//! Kernel placement across runners, in the shape of Pingora's load balancing: the runner set
//! and its load ([`backend`]), active health checks ([`health`]), the selection policy
//! ([`selection`], [`least_connections`]), placements in flight ([`placement`]) and the
//! kernel-to-runner map ([`owners`]).

pub mod backend;
pub mod health;
pub mod least_connections;
pub mod owners;
pub mod placement;
pub mod selection;

use std::sync::{Arc, Mutex};

use url::Url;

use backend::{Backend, Load};
use placement::Placement;
use selection::Selection;

pub struct Balancer {
    backends: Vec<Arc<Backend>>,
    selection: Box<dyn Selection>,
    /// Serializes choosing and counting a placement, so two concurrent kernel starts see each
    /// other's in-flight count. Never held across an await.
    placing: Mutex<()>,
}

impl Balancer {
    pub fn new(runners: &[Url], selection: impl Selection) -> Balancer {
        Balancer {
            backends: runners
                .iter()
                .enumerate()
                .map(|(index, url)| Arc::new(Backend::new(index, url.clone())))
                .collect(),
            selection: Box::new(selection),
            placing: Mutex::new(()),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn backend(&self, index: usize) -> Option<&Arc<Backend>> {
        self.backends.get(index)
    }

    pub fn healthy(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.iter().filter(|backend| backend.is_healthy())
    }

    /// Chooses the runner for a new kernel and counts the placement against it.
    pub fn place(&self) -> Option<Placement> {
        let _placing = self
            .placing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let loads: Vec<Load> = self.backends.iter().map(|backend| backend.load()).collect();
        let chosen = self.selection.select(&loads)?;
        let backend = self.backends.get(chosen)?.clone();
        Some(Placement::start(backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::model::RunnerStatus;
    use least_connections::LeastConnections;

    fn healthy(backend: &Backend, sessions: usize, kernels: usize) {
        backend.record_status(&RunnerStatus {
            runner_id: format!("r{}", backend.index()),
            version: "0".into(),
            sessions,
            kernels,
            draining: false,
        });
    }

    #[test]
    fn concurrent_placements_spread_over_equal_runners() {
        let urls: Vec<Url> = (1..=3)
            .map(|port| Url::parse(&format!("http://127.0.0.1:{port}")).unwrap())
            .collect();
        let balancer = Balancer::new(&urls, LeastConnections);
        assert!(balancer.place().is_none(), "no runner has been checked yet");
        for backend in balancer.backends() {
            healthy(backend, 0, 0);
        }
        let held: Vec<Placement> = (0..3).map(|_| balancer.place().unwrap()).collect();
        let mut chosen: Vec<usize> = held.iter().map(|p| p.backend().index()).collect();
        chosen.sort_unstable();
        assert_eq!(chosen, vec![0, 1, 2]);
    }

    #[test]
    fn finished_placements_keep_counting_as_kernels() {
        let urls = [
            Url::parse("http://127.0.0.1:1").unwrap(),
            Url::parse("http://127.0.0.1:2").unwrap(),
        ];
        let balancer = Balancer::new(&urls, LeastConnections);
        healthy(&balancer.backends()[0], 0, 0);
        healthy(&balancer.backends()[1], 0, 0);
        let first = balancer.place().unwrap();
        assert_eq!(first.backend().index(), 0);
        first.succeeded();
        assert_eq!(balancer.place().unwrap().backend().index(), 1);
    }
}
