//! Kernels whose runner is gone: their last known model, marked `dead` with the reason, kept
//! for a while so clients learn what happened instead of meeting a bare 404. The graveyard is
//! bounded in size and age; a client's `DELETE` clears a grave.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cellgate_protocol::content::ExecutionState;
use cellgate_protocol::message::format_timestamp;
use cellgate_protocol::model::KernelModel;
use uuid::Uuid;

/// Dead kernels kept at most; the oldest go first.
const MAX_GRAVES: usize = 10_000;

/// How long a dead kernel is reported before it is forgotten.
const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
pub struct Graveyard {
    graves: Mutex<HashMap<Uuid, Grave>>,
}

#[derive(Debug, Clone)]
struct Grave {
    model: KernelModel,
    buried: Instant,
}

impl Graveyard {
    pub fn new() -> Graveyard {
        Graveyard::default()
    }

    /// Reports `kernel` dead for `reason`, with what was last known of it.
    pub fn bury(&self, kernel: Uuid, last_known: Option<KernelModel>, reason: &str) {
        let model = match last_known {
            Some(mut model) => {
                model.execution_state = ExecutionState::Dead;
                model.connections = 0;
                model.reason = Some(reason.to_owned());
                model
            }
            // Found through a websocket or a single lookup, never listed: the id and the
            // reason are all there is to say.
            None => KernelModel {
                id: kernel.to_string(),
                name: String::new(),
                last_activity: format_timestamp(chrono::Utc::now()),
                execution_state: ExecutionState::Dead,
                connections: 0,
                reason: Some(reason.to_owned()),
            },
        };
        let mut graves = self.lock();
        prune(&mut graves);
        if graves.len() >= MAX_GRAVES {
            if let Some(oldest) = graves
                .iter()
                .min_by_key(|(_, grave)| grave.buried)
                .map(|(kernel, _)| *kernel)
            {
                graves.remove(&oldest);
            }
        }
        graves.insert(
            kernel,
            Grave {
                model,
                buried: Instant::now(),
            },
        );
    }

    pub fn get(&self, kernel: &Uuid) -> Option<KernelModel> {
        self.lock().get(kernel).map(|grave| grave.model.clone())
    }

    /// Forgets a dead kernel; true when it was there.
    pub fn remove(&self, kernel: &Uuid) -> bool {
        self.lock().remove(kernel).is_some()
    }

    /// Takes back kernels a runner that came back still lists: they were not dead after all.
    pub fn resurrect<'a>(&self, kernels: impl IntoIterator<Item = &'a Uuid>) {
        let mut graves = self.lock();
        if graves.is_empty() {
            return;
        }
        for kernel in kernels {
            graves.remove(kernel);
        }
    }

    pub fn list(&self) -> Vec<KernelModel> {
        let mut graves = self.lock();
        prune(&mut graves);
        graves.values().map(|grave| grave.model.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Grave>> {
        // Every operation leaves the map consistent, so a panic elsewhere cannot corrupt it.
        self.graves
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn prune(graves: &mut HashMap<Uuid, Grave>) {
    graves.retain(|_, grave| grave.buried.elapsed() < KEEP_FOR);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buried_kernels_are_dead_with_their_reason_until_deleted() {
        let graveyard = Graveyard::new();
        let kernel = Uuid::new_v4();
        let model = KernelModel {
            id: kernel.to_string(),
            name: "python3".into(),
            last_activity: "2024-01-01T00:00:00.000000Z".into(),
            execution_state: ExecutionState::Busy,
            connections: 2,
            reason: None,
        };
        graveyard.bury(kernel, Some(model), "kernel runner http://r:1/ is gone");
        let dead = graveyard.get(&kernel).unwrap();
        assert_eq!(dead.execution_state, ExecutionState::Dead);
        assert_eq!(dead.name, "python3");
        assert_eq!(dead.connections, 0);
        assert_eq!(
            dead.reason.as_deref(),
            Some("kernel runner http://r:1/ is gone")
        );
        let unknown = Uuid::new_v4();
        graveyard.bury(unknown, None, "gone");
        assert_eq!(graveyard.get(&unknown).unwrap().id, unknown.to_string());
        assert_eq!(graveyard.list().len(), 2);
        graveyard.resurrect([&unknown]);
        assert!(graveyard.remove(&kernel));
        assert!(!graveyard.remove(&kernel));
        assert_eq!(graveyard.len(), 0);
    }
}
