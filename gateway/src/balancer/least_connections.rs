//! Least connections: the healthy runner with the fewest websocket sessions gets the kernel,
//! and among equals the one with the fewest kernels.

use super::backend::Load;
use super::selection::Selection;

#[derive(Debug, Clone, Copy, Default)]
pub struct LeastConnections;

impl Selection for LeastConnections {
    fn select(&self, candidates: &[Load]) -> Option<usize> {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, load)| load.healthy && !load.draining)
            // A placement in flight counts as a kernel before the runner reports it. It does
            // not count as a session: its session appears (and is counted) only when its
            // client connects, and a guess that vanished when the start is answered would
            // make concurrent starts skip runners that merely answered later.
            .min_by_key(|(index, load)| (load.sessions, load.kernels + load.in_flight, *index))
            .map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sessions: usize, kernels: usize) -> Load {
        Load {
            healthy: true,
            draining: false,
            sessions,
            kernels,
            in_flight: 0,
        }
    }

    #[test]
    fn fewest_sessions_wins() {
        let loads = [load(3, 1), load(1, 9), load(2, 0)];
        assert_eq!(LeastConnections.select(&loads), Some(1));
    }

    #[test]
    fn ties_on_sessions_go_to_fewest_kernels_then_first_listed() {
        assert_eq!(
            LeastConnections.select(&[load(1, 4), load(1, 2), load(1, 3)]),
            Some(1)
        );
        assert_eq!(LeastConnections.select(&[load(0, 0), load(0, 0)]), Some(0));
    }

    #[test]
    fn placements_in_flight_count_against_their_runner_as_kernels() {
        let busy = Load {
            in_flight: 2,
            ..load(0, 0)
        };
        assert_eq!(LeastConnections.select(&[busy, load(0, 1)]), Some(1));
        // Sessions still come first: pending starts do not outweigh an open session.
        assert_eq!(LeastConnections.select(&[busy, load(1, 0)]), Some(0));
        // A runner with a start pending and fewer kernels is not skipped for one with more.
        let pending = Load {
            in_flight: 1,
            ..load(0, 9)
        };
        assert_eq!(LeastConnections.select(&[load(0, 11), pending]), Some(1));
    }

    #[test]
    fn unhealthy_and_draining_runners_are_skipped() {
        let down = Load {
            healthy: false,
            ..load(0, 0)
        };
        let draining = Load {
            draining: true,
            ..load(0, 0)
        };
        assert_eq!(
            LeastConnections.select(&[down, draining, load(5, 5)]),
            Some(2)
        );
        assert_eq!(LeastConnections.select(&[down, draining]), None);
        assert_eq!(LeastConnections.select(&[]), None);
    }
}
