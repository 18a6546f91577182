//! Kernel placement across runners, in the shape of Pingora's load balancing: where the
//! runners are ([`discovery`], kept in step by [`membership`]), each runner and its load
//! ([`backend`]), active health checks ([`health`]), the selection policy ([`selection`],
//! [`least_connections`]), placements in flight ([`placement`]), the kernel-to-runner map
//! ([`owners`]) and the kernels of runners that are gone ([`graveyard`]).

pub mod backend;
pub mod discovery;
pub mod graveyard;
pub mod health;
pub mod least_connections;
pub mod membership;
pub mod owners;
pub mod placement;
pub mod selection;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use cellgate_protocol::model::KernelModel;
use url::Url;
use uuid::Uuid;

use crate::cluster::events::Events;
use backend::{Backend, Load};
use graveyard::Graveyard;
use owners::KernelOwners;
use placement::Placement;
use selection::Selection;

pub struct Balancer {
    /// The current runner set, replaced whole when discovery changes it, so readers take a
    /// cheap snapshot and never hold the lock.
    backends: RwLock<Arc<[Arc<Backend>]>>,
    next_id: AtomicUsize,
    selection: Box<dyn Selection>,
    /// Serializes choosing and counting a placement, so two concurrent kernel starts see each
    /// other's in-flight count. Never held across an await.
    placing: Mutex<()>,
    /// Serializes recording kernels against burying them, so a kernel list read just before
    /// its runner was declared gone cannot bring the runner's kernels back to life.
    recording: Mutex<()>,
    pub owners: KernelOwners,
    pub graveyard: Graveyard,
    /// Where runners joining, failing, going and coming back are reported, for the cluster
    /// page.
    pub events: Arc<Events>,
}

/// How one discovery answer changed the runner set.
#[derive(Debug, Default)]
pub struct Change {
    pub added: Vec<Arc<Backend>>,
    pub removed: Vec<Arc<Backend>>,
}

impl Balancer {
    /// A balancer with no runners yet; [`Balancer::update`] brings them in.
    pub fn new(selection: impl Selection) -> Balancer {
        Balancer {
            backends: RwLock::new(Arc::from(Vec::new())),
            next_id: AtomicUsize::new(0),
            selection: Box::new(selection),
            placing: Mutex::new(()),
            recording: Mutex::new(()),
            owners: KernelOwners::new(),
            graveyard: Graveyard::new(),
            events: Arc::new(Events::default()),
        }
    }

    /// The runners right now.
    pub fn backends(&self) -> Arc<[Arc<Backend>]> {
        self.backends
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn backend(&self, id: usize) -> Option<Arc<Backend>> {
        self.backends()
            .iter()
            .find(|backend| backend.id() == id)
            .cloned()
    }

    pub fn healthy(&self) -> Vec<Arc<Backend>> {
        self.backends()
            .iter()
            .filter(|backend| backend.is_healthy())
            .cloned()
            .collect()
    }

    /// Makes `urls` the runner set, in that order. Runners already known keep their state;
    /// the caller decides what becomes of the removed ones.
    pub fn update(&self, urls: &[Url]) -> Change {
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut change = Change::default();
        let mut next: Vec<Arc<Backend>> = Vec::with_capacity(urls.len());
        for url in urls {
            if next.iter().any(|backend| backend.url() == url) {
                continue;
            }
            match backends.iter().find(|backend| backend.url() == url) {
                Some(known) => next.push(known.clone()),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let backend = Arc::new(Backend::new(id, url.clone()));
                    change.added.push(backend.clone());
                    next.push(backend);
                }
            }
        }
        change.removed = backends
            .iter()
            .filter(|backend| !next.iter().any(|kept| kept.id() == backend.id()))
            .cloned()
            .collect();
        *backends = Arc::from(next);
        change
    }

    /// Chooses the runner for a new kernel and counts the placement against it.
    #[cfg(test)]
    pub fn place(&self) -> Option<Placement> {
        self.place_avoiding(&[])
    }

    /// Like [`Balancer::place`], skipping the runners in `tried`.
    pub fn place_avoiding(&self, tried: &[usize]) -> Option<Placement> {
        let backends = self.backends();
        let _placing = lock(&self.placing);
        let loads: Vec<Load> = backends
            .iter()
            .map(|backend| {
                let mut load = backend.load();
                load.healthy &= !tried.contains(&backend.id());
                load
            })
            .collect();
        let chosen = self.selection.select(&loads)?;
        let backend = backends.get(chosen)?.clone();
        Some(Placement::start(backend))
    }

    /// Records that `backend` holds `kernel`, unless the runner is gone.
    pub fn record_owner(&self, kernel: Uuid, backend: &Backend, model: Option<KernelModel>) {
        let _recording = lock(&self.recording);
        if !backend.is_gone() {
            self.owners.record(kernel, backend.id(), model);
        }
    }

    /// Takes a complete kernel list of `backend`, read by a request sent at `asked`: it is
    /// the truth about the runner's kernels, including ones buried while it was away.
    pub fn record_list(&self, backend: &Backend, models: &[KernelModel], asked: Instant) {
        let _recording = lock(&self.recording);
        if backend.is_gone() {
            return;
        }
        self.owners.sync(backend.id(), models, asked);
        let listed: Vec<Uuid> = models
            .iter()
            .filter_map(|model| Uuid::parse_str(&model.id).ok())
            .collect();
        self.graveyard.resurrect(&listed);
        backend.synced(models.len());
    }

    /// Reports every kernel `backend` was known to hold as dead for `reason`. Returns how many.
    pub fn bury_kernels_of(&self, backend: &Backend, reason: &str) -> usize {
        let _recording = lock(&self.recording);
        let kernels = self.owners.take_backend(backend.id());
        let count = kernels.len();
        for (kernel, model) in kernels {
            self.graveyard.bury(kernel, model, reason);
        }
        count
    }
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutexes guard no data, so a panic elsewhere leaves nothing inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::content::ExecutionState;
    use cellgate_protocol::model::RunnerStatus;
    use least_connections::LeastConnections;

    fn healthy(backend: &Backend, sessions: usize, kernels: usize) {
        backend.record_status(&RunnerStatus {
            runner_id: format!("r{}", backend.id()),
            version: "0".into(),
            sessions,
            kernels,
            draining: false,
        });
    }

    fn urls(ports: impl IntoIterator<Item = u16>) -> Vec<Url> {
        ports
            .into_iter()
            .map(|port| Url::parse(&format!("http://127.0.0.1:{port}")).unwrap())
            .collect()
    }

    #[test]
    fn concurrent_placements_spread_over_equal_runners() {
        let balancer = Balancer::new(LeastConnections);
        balancer.update(&urls(1..=3));
        assert!(balancer.place().is_none(), "no runner has been checked yet");
        for backend in balancer.backends().iter() {
            healthy(backend, 0, 0);
        }
        let held: Vec<Placement> = (0..3).map(|_| balancer.place().unwrap()).collect();
        let mut chosen: Vec<usize> = held.iter().map(|p| p.backend().id()).collect();
        chosen.sort_unstable();
        assert_eq!(chosen, vec![0, 1, 2]);
    }

    #[test]
    fn finished_placements_keep_counting_as_kernels() {
        let balancer = Balancer::new(LeastConnections);
        balancer.update(&urls([1, 2]));
        healthy(&balancer.backends()[0], 0, 0);
        healthy(&balancer.backends()[1], 0, 0);
        let first = balancer.place().unwrap();
        assert_eq!(first.backend().id(), 0);
        first.succeeded();
        assert_eq!(balancer.place().unwrap().backend().id(), 1);
        assert_eq!(balancer.place_avoiding(&[1]).unwrap().backend().id(), 0);
        assert!(balancer.place_avoiding(&[0, 1]).is_none());
    }

    #[test]
    fn discovery_changes_add_and_remove_runners_and_keep_the_rest() {
        let balancer = Balancer::new(LeastConnections);
        let change = balancer.update(&urls([1, 2]));
        assert_eq!((change.added.len(), change.removed.len()), (2, 0));
        healthy(&balancer.backends()[1], 0, 0);
        let change = balancer.update(&urls([2, 3, 3]));
        assert_eq!(change.added.len(), 1);
        assert_eq!(change.removed.len(), 1);
        assert_eq!(change.removed[0].url().port(), Some(1));
        let now = balancer.backends();
        assert_eq!(now.len(), 2);
        assert!(now[0].is_healthy(), "a runner that stays keeps its state");
        assert_eq!(now[1].id(), 2, "ids are never reused");
        assert!(balancer.backend(0).is_none());
        assert_eq!(balancer.healthy().len(), 1);
    }

    #[test]
    fn a_lost_runners_kernels_are_reported_dead() {
        let balancer = Balancer::new(LeastConnections);
        balancer.update(&urls([1, 2]));
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        balancer.owners.record(a, 0, None);
        balancer.owners.record(b, 1, None);
        let lost = balancer.backend(0).unwrap();
        assert_eq!(
            balancer.bury_kernels_of(&lost, "kernel runner 1 is gone"),
            1
        );
        assert_eq!(balancer.owners.get(&a), None);
        assert_eq!(
            balancer.graveyard.get(&a).unwrap().execution_state,
            ExecutionState::Dead
        );
        assert_eq!(balancer.owners.get(&b), Some(1));
    }
}
