//! Which runner owns which kernel, as far as this gateway knows: filled by placements and by
//! asking the runners, so it is a cache that a restart may empty, never the source of truth.

use dashmap::DashMap;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct KernelOwners {
    /// Kernel id to the owning backend's index in the balancer.
    owners: DashMap<Uuid, usize>,
}

impl KernelOwners {
    pub fn new() -> KernelOwners {
        KernelOwners::default()
    }

    /// The owner's index, copied out so no map guard outlives the call.
    pub fn get(&self, kernel: &Uuid) -> Option<usize> {
        self.owners.get(kernel).map(|entry| *entry)
    }

    pub fn record(&self, kernel: Uuid, backend: usize) {
        self.owners.insert(kernel, backend);
    }

    pub fn forget(&self, kernel: &Uuid) {
        self.owners.remove(kernel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_forgets_owners() {
        let owners = KernelOwners::new();
        let kernel = Uuid::new_v4();
        assert_eq!(owners.get(&kernel), None);
        owners.record(kernel, 2);
        assert_eq!(owners.get(&kernel), Some(2));
        owners.record(kernel, 1);
        assert_eq!(owners.get(&kernel), Some(1));
        owners.forget(&kernel);
        assert_eq!(owners.get(&kernel), None);
    }
}
