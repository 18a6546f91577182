//! Rates from counters: cells per second from the count of execute replies this gateway
//! has timed, and jobs finished from the runners' counts of attempts they ran to a final
//! state. A runner's count that goes down belongs to a restarted runner, whose whole new
//! count is new work, as Prometheus reads a counter reset; a runner missing from a sample
//! keeps its last count, so what it did while unreachable is counted when it answers again.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Throughput {
    cells: Option<u64>,
    jobs: HashMap<String, u64>,
}

impl Throughput {
    pub fn new() -> Throughput {
        Throughput::default()
    }

    /// Cells completed per second over `elapsed`, the time since the last call; 0 on the
    /// first call, which only takes the count as the starting point.
    pub fn cells_per_second(&mut self, total: u64, elapsed: Duration) -> f64 {
        let previous = self.cells.replace(total);
        match previous {
            Some(previous) if !elapsed.is_zero() => {
                total.saturating_sub(previous) as f64 / elapsed.as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Jobs finished since the last call, over `totals`: each runner's (by its key) count
    /// of jobs it finished since it started. A runner seen for the first time only sets
    /// its starting point.
    pub fn jobs_finished<'a>(&mut self, totals: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
        let mut finished = 0;
        for (runner, total) in totals {
            match self.jobs.insert(runner.to_owned(), total) {
                Some(previous) if total >= previous => finished += total - previous,
                Some(_) => finished += total,
                None => {}
            }
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_per_second_from_the_timed_replies() {
        let mut rates = Throughput::new();
        assert_eq!(rates.cells_per_second(100, Duration::from_secs(2)), 0.0);
        assert_eq!(rates.cells_per_second(110, Duration::from_secs(2)), 5.0);
        assert_eq!(rates.cells_per_second(110, Duration::from_secs(2)), 0.0);
        assert_eq!(rates.cells_per_second(113, Duration::ZERO), 0.0);
    }

    #[test]
    fn job_counts_survive_restarts_and_gaps() {
        let mut rates = Throughput::new();
        assert_eq!(rates.jobs_finished([("a", 10), ("b", 5)]), 0);
        assert_eq!(rates.jobs_finished([("a", 12), ("b", 5)]), 2);
        // b restarted and has finished 3 since; a did not answer this time.
        assert_eq!(rates.jobs_finished([("b", 3)]), 3);
        // a answers again: what it did meanwhile counts now.
        assert_eq!(rates.jobs_finished([("a", 20), ("b", 3)]), 8);
        // A new runner starts from its first count.
        assert_eq!(rates.jobs_finished([("a", 20), ("b", 3), ("c", 40)]), 0);
    }
}
