//! Node heartbeats: this node's CPU and memory figures, and which other nodes are alive. A
//! node is judged by when its heartbeat last changed on the observer's own clock, so clocks
//! that disagree between nodes do not matter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cellgate_protocol::job::NodeHeartbeat;

use super::store::Lease;

/// CPU use from `/proc/stat` between two readings.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(u64, u64)>,
}

impl CpuMeter {
    pub const fn new() -> CpuMeter {
        CpuMeter { last: None }
    }

    /// Percent of all cores busy since the last call (0 on the first). Reads procfs, which
    /// is memory, not disk.
    pub fn sample(&mut self) -> f64 {
        let Some((busy, total)) = read_cpu() else {
            return 0.0;
        };
        let percent = match self.last {
            Some((last_busy, last_total)) if total > last_total => {
                (busy.saturating_sub(last_busy)) as f64 * 100.0 / (total - last_total) as f64
            }
            _ => 0.0,
        };
        self.last = Some((busy, total));
        percent
    }
}

fn read_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `(used, total)` bytes of memory.
pub fn memory() -> (u64, u64) {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    let field = |name: &str| {
        info.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    let total = field("MemTotal:");
    (total.saturating_sub(field("MemAvailable:")), total)
}

/// What one observer has seen of the other nodes.
#[derive(Debug)]
pub struct Liveness {
    stale_after: Duration,
    seen: HashMap<String, Seen>,
    /// Nodes named in leases that have no heartbeat at all, and since when.
    missing: HashMap<String, Instant>,
}

#[derive(Debug)]
struct Seen {
    boot: String,
    sequence: u64,
    changed_at: Instant,
    stopped: bool,
}

impl Liveness {
    pub fn new(stale_after: Duration) -> Liveness {
        Liveness {
            stale_after,
            seen: HashMap::new(),
            missing: HashMap::new(),
        }
    }

    /// Takes in the heartbeats just read.
    pub fn observe(&mut self, heartbeats: &[NodeHeartbeat], now: Instant) {
        for heartbeat in heartbeats {
            let boot = boot_of(heartbeat);
            match self.seen.get_mut(&heartbeat.node) {
                Some(seen) if seen.boot == boot && seen.sequence == heartbeat.sequence => {
                    seen.stopped = heartbeat.stopped;
                }
                _ => {
                    self.seen.insert(
                        heartbeat.node.clone(),
                        Seen {
                            boot: boot.to_owned(),
                            sequence: heartbeat.sequence,
                            changed_at: now,
                            stopped: heartbeat.stopped,
                        },
                    );
                    self.missing.remove(&heartbeat.node);
                }
            }
        }
    }

    /// Whether a node is alive now.
    pub fn node_alive(&self, node: &str, now: Instant) -> bool {
        self.seen.get(node).is_some_and(|seen| {
            !seen.stopped && now.duration_since(seen.changed_at) < self.stale_after
        })
    }

    /// Whether the holder of `lease` still holds it: its node is alive in the same boot.
    pub fn holds(&mut self, lease: &Lease, now: Instant) -> bool {
        match self.seen.get(&lease.node) {
            Some(seen) => {
                seen.boot == lease.boot
                    && !seen.stopped
                    && now.duration_since(seen.changed_at) < self.stale_after
            }
            None => {
                // A node that crashed before its first heartbeat gets the same grace.
                let since = *self.missing.entry(lease.node.clone()).or_insert(now);
                now.duration_since(since) < self.stale_after
            }
        }
    }
}

/// The incarnation a heartbeat belongs to.
fn boot_of(heartbeat: &NodeHeartbeat) -> &str {
    heartbeat.boot.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn heartbeat(node: &str, boot: &str, sequence: u64) -> NodeHeartbeat {
        NodeHeartbeat {
            node: node.into(),
            boot: boot.into(),
            sequence,
            cpu_percent: 0.0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            slots: 1,
            running: vec![],
            updated_at: Utc::now(),
            stopped: false,
        }
    }

    fn lease(node: &str, boot: &str) -> Lease {
        Lease {
            node: node.into(),
            boot: boot.into(),
            attempt: 1,
            claimed_at: Utc::now(),
        }
    }

    #[test]
    fn a_node_whose_heartbeat_stops_changing_goes_stale() {
        let stale = Duration::from_secs(10);
        let mut liveness = Liveness::new(stale);
        let start = Instant::now();
        liveness.observe(&[heartbeat("a", "1", 1)], start);
        assert!(liveness.holds(&lease("a", "1"), start + Duration::from_secs(9)));
        liveness.observe(&[heartbeat("a", "1", 1)], start + Duration::from_secs(9));
        assert!(!liveness.holds(&lease("a", "1"), start + Duration::from_secs(11)));
        liveness.observe(&[heartbeat("a", "1", 2)], start + Duration::from_secs(12));
        assert!(liveness.holds(&lease("a", "1"), start + Duration::from_secs(13)));
        assert!(liveness.node_alive("a", start + Duration::from_secs(13)));
    }

    #[test]
    fn a_restarted_node_loses_the_leases_of_its_earlier_boot() {
        let mut liveness = Liveness::new(Duration::from_secs(10));
        let now = Instant::now();
        liveness.observe(&[heartbeat("a", "2", 1)], now);
        assert!(!liveness.holds(&lease("a", "1"), now));
        assert!(liveness.holds(&lease("a", "2"), now));
    }

    #[test]
    fn a_node_without_any_heartbeat_gets_a_grace_period() {
        let mut liveness = Liveness::new(Duration::from_secs(10));
        let now = Instant::now();
        assert!(liveness.holds(&lease("ghost", "1"), now));
        assert!(!liveness.holds(&lease("ghost", "1"), now + Duration::from_secs(11)));
    }

    #[test]
    fn a_stopped_node_is_dead_at_once() {
        let mut liveness = Liveness::new(Duration::from_secs(10));
        let now = Instant::now();
        let mut beat = heartbeat("a", "1", 5);
        beat.stopped = true;
        liveness.observe(&[beat], now);
        assert!(!liveness.holds(&lease("a", "1"), now));
    }
}
