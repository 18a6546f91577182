//! Which runner owns which kernel, as far as this gateway knows, with the kernel's model as
//! last seen: filled by placements, by listing and by asking the runners, so it is a cache
//! that a restart may empty, never the source of truth. The models let the gateway answer for
//! kernels whose runner has gone.

use std::collections::HashSet;
use std::time::Instant;

use cellgate_protocol::model::KernelModel;
use dashmap::DashMap;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct KernelOwners {
    owners: DashMap<Uuid, Owner>,
}

#[derive(Debug, Clone)]
struct Owner {
    /// The owning backend's id in the balancer.
    backend: usize,
    model: Option<KernelModel>,
    /// When the entry was last confirmed.
    seen: Instant,
}

impl KernelOwners {
    pub fn new() -> KernelOwners {
        KernelOwners::default()
    }

    /// The owner's id, copied out so no map guard outlives the call.
    pub fn get(&self, kernel: &Uuid) -> Option<usize> {
        self.owners.get(kernel).map(|entry| entry.backend)
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Records the owner, and the model when the caller has one; a known model is kept when
    /// the caller has none.
    pub fn record(&self, kernel: Uuid, backend: usize, model: Option<KernelModel>) {
        let seen = Instant::now();
        self.owners
            .entry(kernel)
            .and_modify(|owner| {
                if owner.backend != backend {
                    owner.model = None;
                }
                owner.backend = backend;
                owner.seen = seen;
                if model.is_some() {
                    owner.model.clone_from(&model);
                }
            })
            .or_insert_with(|| Owner {
                backend,
                model: model.clone(),
                seen,
            });
    }

    pub fn forget(&self, kernel: &Uuid) {
        self.owners.remove(kernel);
    }

    /// Takes `models` as the complete list of `backend`'s kernels, read by a request sent at
    /// `asked`. Kernels of the backend missing from it were deleted, unless they were recorded
    /// after the request left, because then the list may simply predate them.
    pub fn sync(&self, backend: usize, models: &[KernelModel], asked: Instant) {
        let mut listed = HashSet::with_capacity(models.len());
        for model in models {
            if let Ok(kernel) = Uuid::parse_str(&model.id) {
                listed.insert(kernel);
                self.record(kernel, backend, Some(model.clone()));
            }
        }
        self.owners.retain(|kernel, owner| {
            owner.backend != backend || owner.seen >= asked || listed.contains(kernel)
        });
    }

    /// Removes every kernel of `backend` and returns them with their last known models.
    pub fn take_backend(&self, backend: usize) -> Vec<(Uuid, Option<KernelModel>)> {
        let mut taken = Vec::new();
        self.owners.retain(|kernel, owner| {
            if owner.backend != backend {
                return true;
            }
            taken.push((*kernel, owner.model.take()));
            false
        });
        taken
    }

    /// The last known models of `backend`'s kernels.
    pub fn models_of(&self, backend: usize) -> Vec<KernelModel> {
        self.owners
            .iter()
            .filter(|entry| entry.backend == backend)
            .filter_map(|entry| entry.model.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::content::ExecutionState;

    fn model(kernel: Uuid) -> KernelModel {
        KernelModel {
            id: kernel.to_string(),
            name: "python3".into(),
            last_activity: "2024-01-01T00:00:00.000000Z".into(),
            execution_state: ExecutionState::Idle,
            connections: 0,
            reason: None,
        }
    }

    #[test]
    fn records_and_forgets_owners() {
        let owners = KernelOwners::new();
        let kernel = Uuid::new_v4();
        assert_eq!(owners.get(&kernel), None);
        owners.record(kernel, 2, Some(model(kernel)));
        assert_eq!(owners.get(&kernel), Some(2));
        owners.record(kernel, 2, None);
        assert_eq!(owners.models_of(2).len(), 1, "a known model is kept");
        owners.record(kernel, 1, None);
        assert_eq!(owners.get(&kernel), Some(1));
        assert!(
            owners.models_of(1).is_empty(),
            "another runner's model is not"
        );
        owners.forget(&kernel);
        assert_eq!(owners.get(&kernel), None);
    }

    #[test]
    fn a_sync_drops_deleted_kernels_but_not_newer_ones() {
        let owners = KernelOwners::new();
        let (kept, deleted, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        owners.record(deleted, 0, None);
        owners.record(other, 1, None);
        let asked = Instant::now();
        let newer = Uuid::new_v4();
        owners.record(newer, 0, None);
        owners.sync(0, &[model(kept)], asked);
        assert_eq!(owners.get(&kept), Some(0));
        assert_eq!(owners.get(&deleted), None);
        assert_eq!(
            owners.get(&newer),
            Some(0),
            "started after the list was asked for"
        );
        assert_eq!(owners.get(&other), Some(1), "another runner's kernels stay");
    }

    #[test]
    fn taking_a_backend_hands_over_its_kernels() {
        let owners = KernelOwners::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        owners.record(a, 0, Some(model(a)));
        owners.record(b, 1, None);
        let taken = owners.take_backend(0);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, a);
        assert!(taken[0].1.is_some());
        assert_eq!(owners.get(&a), None);
        assert_eq!(owners.len(), 1);
    }
}
