//! The cluster as this gateway has watched it: the last ten minutes of samples (node CPU and
//! memory, cells per second, jobs per minute), the last report of every runner, each node's
//! state, and the highest attempt seen running of each job. Each [`Observation`] is folded
//! in by [`View::record`], which also reports what changed as events: a node going stale,
//! stopping or coming back, a runner starting to drain, a job running again at a higher
//! attempt. [`View::snapshot`] turns it, with the balancer's current runners, into the
//! answer of `GET /api/cluster`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cellgate_protocol::job::{NodeReport, RunningJob};
use cellgate_protocol::model::{NodeIdentity, RunnerReport};
use chrono::{DateTime, Utc};

use super::events::{EventKind, Events};
use super::observe::Observation;
use super::ring::Ring;
use super::snapshot::{
    JobsView, NodeHistory, NodeState, NodeView, RunnerState, RunnerView, Snapshot, ThroughputView,
};
use super::throughput::Throughput;
use crate::balancer::backend::Health;
use crate::balancer::Balancer;

/// Samples kept: ten minutes at one sample every two seconds.
pub const HISTORY_SAMPLES: usize = 300;

/// Jobs per minute counts the jobs finished in this window up to each sample.
const JOBS_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A job not seen running for this many samples is forgotten.
const ATTEMPTS_FORGOTTEN_AFTER: u64 = HISTORY_SAMPLES as u64;

/// Jobs followed at most; past this the ones seen longest ago are forgotten first.
const MAX_ATTEMPTS: usize = 10_000;

#[derive(Debug, Clone)]
struct Sample {
    at: DateTime<Utc>,
    cells_per_second: f64,
    jobs_finished: u64,
    jobs_per_minute: f64,
    /// The nodes alive at that moment.
    nodes: Vec<NodePoint>,
}

#[derive(Debug, Clone)]
struct NodePoint {
    name: String,
    cpu_percent: f32,
    memory_percent: Option<f32>,
}

#[derive(Debug, Clone)]
struct KnownNode {
    report: NodeReport,
    state: NodeState,
}

#[derive(Debug, Clone)]
struct Attempt {
    attempt: u32,
    node: String,
    /// The round it was last seen running in.
    seen: u64,
}

#[derive(Debug)]
pub struct View {
    samples: Ring<Sample>,
    throughput: Throughput,
    nodes: BTreeMap<String, KnownNode>,
    /// The last identity each runner reported, by runner id (which names its node).
    identities: HashMap<String, NodeIdentity>,
    /// The last report of each runner, by balancer id.
    reports: HashMap<usize, RunnerReport>,
    draining: HashMap<usize, bool>,
    attempts: HashMap<String, Attempt>,
    round: u64,
    /// Whether a node list has been seen: the nodes in the first one are what was there
    /// before, not nodes joining.
    nodes_listed: bool,
    cells_total: u64,
    unfinished: Option<usize>,
}

impl Default for View {
    fn default() -> View {
        View::new(HISTORY_SAMPLES)
    }
}

impl View {
    /// A view keeping `samples` samples.
    pub fn new(samples: usize) -> View {
        View {
            samples: Ring::new(samples),
            throughput: Throughput::new(),
            nodes: BTreeMap::new(),
            identities: HashMap::new(),
            reports: HashMap::new(),
            draining: HashMap::new(),
            attempts: HashMap::new(),
            round: 0,
            nodes_listed: false,
            cells_total: 0,
            unfinished: None,
        }
    }

    /// Folds in one look at the cluster, taken at `at`, `elapsed` after the one before.
    pub fn record(
        &mut self,
        observation: Observation,
        elapsed: Duration,
        at: DateTime<Utc>,
        events: &Events,
    ) {
        self.round += 1;

        for seen in &observation.runners {
            let was_draining = self.draining.insert(seen.id, seen.draining);
            if seen.draining && was_draining != Some(true) {
                let name = seen
                    .report
                    .as_ref()
                    .or_else(|| self.reports.get(&seen.id))
                    .map_or_else(
                        || seen.url.clone(),
                        |report| report.status.runner_id.clone(),
                    );
                events.push(
                    EventKind::RunnerDraining,
                    name,
                    format!(
                        "{} is shutting down: it takes no new kernels; its open sessions may finish",
                        seen.url
                    ),
                );
            }
            if let Some(report) = &seen.report {
                self.identities
                    .insert(report.status.runner_id.clone(), report.node.clone());
                self.reports.insert(seen.id, report.clone());
            }
        }
        let present: HashSet<usize> = observation.runners.iter().map(|seen| seen.id).collect();
        self.reports.retain(|id, _| present.contains(id));
        self.draining.retain(|id, _| present.contains(id));

        let cells_per_second = self
            .throughput
            .cells_per_second(observation.cells_total, elapsed);
        self.cells_total = observation.cells_total;
        let jobs_finished = self.throughput.jobs_finished(
            observation
                .runners
                .iter()
                .filter_map(|seen| seen.report.as_ref())
                .map(|report| {
                    (
                        report.status.runner_id.as_str(),
                        report.counters.jobs_finished.total(),
                    )
                }),
        );
        if observation.runners.iter().any(|seen| seen.report.is_some()) {
            self.unfinished = observation
                .runners
                .iter()
                .filter_map(|seen| seen.report.as_ref()?.counters.jobs_unfinished)
                .max();
        }

        if let Some(nodes) = observation.nodes {
            let first = !self.nodes_listed;
            self.nodes_listed = true;
            self.observe_nodes(nodes, first, events);
        }

        let since = at - JOBS_WINDOW;
        let earlier: u64 = self
            .samples
            .iter()
            .rev()
            .take_while(|sample| sample.at > since)
            .map(|sample| sample.jobs_finished)
            .sum();
        let nodes = self
            .nodes
            .iter()
            .filter(|(_, node)| node.state == NodeState::Alive)
            .map(|(name, node)| {
                let beat = &node.report.heartbeat;
                NodePoint {
                    name: name.clone(),
                    cpu_percent: tenths(beat.cpu_percent),
                    memory_percent: (beat.memory_total_bytes > 0).then(|| {
                        tenths(
                            beat.memory_used_bytes as f64 * 100.0 / beat.memory_total_bytes as f64,
                        )
                    }),
                }
            })
            .collect();
        self.samples.push(Sample {
            at,
            cells_per_second,
            jobs_finished,
            jobs_per_minute: (earlier + jobs_finished) as f64,
            nodes,
        });
    }

    fn observe_nodes(&mut self, reports: Vec<NodeReport>, first: bool, events: &Events) {
        let listed: HashSet<String> = reports
            .iter()
            .map(|report| report.heartbeat.node.clone())
            .collect();
        for report in reports {
            let name = report.heartbeat.node.clone();
            let state = if report.heartbeat.stopped {
                NodeState::Stopped
            } else if report.alive {
                NodeState::Alive
            } else {
                NodeState::Stale
            };
            let previous = self.nodes.get(&name).map(|known| known.state);
            let change = match (previous, state) {
                (None, NodeState::Alive) if !first => Some((
                    EventKind::NodeJoined,
                    "published its first heartbeat".to_owned(),
                )),
                (Some(NodeState::Alive), NodeState::Stale) => Some((
                    EventKind::NodeStale,
                    "its heartbeat stopped changing: it is taken for dead and its jobs go back to the queue"
                        .to_owned(),
                )),
                (Some(NodeState::Alive | NodeState::Stale), NodeState::Stopped) => Some((
                    EventKind::NodeStopped,
                    "stopped: its runner shut down".to_owned(),
                )),
                (Some(NodeState::Stale | NodeState::Stopped), NodeState::Alive) => {
                    Some((EventKind::NodeBack, "beats again".to_owned()))
                }
                _ => None,
            };
            if let Some((kind, message)) = change {
                events.push(kind, name.clone(), message);
            }
            for job in &report.heartbeat.running {
                self.observe_attempt(job, &name, events);
            }
            self.nodes.insert(name, KnownNode { report, state });
        }
        self.nodes.retain(|name, _| listed.contains(name));
        let round = self.round;
        self.attempts
            .retain(|_, attempt| round - attempt.seen < ATTEMPTS_FORGOTTEN_AFTER);
        if self.attempts.len() > MAX_ATTEMPTS {
            let mut seen: Vec<u64> = self.attempts.values().map(|a| a.seen).collect();
            seen.sort_unstable();
            let cut = seen[self.attempts.len() - MAX_ATTEMPTS];
            self.attempts.retain(|_, attempt| attempt.seen >= cut);
        }
    }

    /// A job seen running: a higher attempt than the last one seen is a job run again.
    fn observe_attempt(&mut self, job: &RunningJob, node: &str, events: &Events) {
        let round = self.round;
        match self.attempts.get_mut(&job.id) {
            Some(known) if job.attempt > known.attempt => {
                events.push(
                    EventKind::JobRequeued,
                    job.id.clone(),
                    format!(
                        "runs again as attempt {} on {node}; attempt {} ran on {}",
                        job.attempt, known.attempt, known.node
                    ),
                );
                *known = Attempt {
                    attempt: job.attempt,
                    node: node.to_owned(),
                    seen: round,
                };
            }
            Some(known) if job.attempt == known.attempt => known.seen = round,
            // An earlier attempt, still listed in the last heartbeat of a dead node.
            Some(_) => {}
            None => {
                self.attempts.insert(
                    job.id.clone(),
                    Attempt {
                        attempt: job.attempt,
                        node: node.to_owned(),
                        seen: round,
                    },
                );
            }
        }
    }

    /// The view with the balancer's runners as they are now.
    pub fn snapshot(
        &self,
        balancer: &Balancer,
        events: &Events,
        sample_every: Duration,
    ) -> Snapshot {
        let backends = balancer.backends();
        let runners: Vec<RunnerView> = backends
            .iter()
            .map(|backend| {
                let counters = backend.counters();
                let state = match counters.health {
                    Health::Gone => RunnerState::Gone,
                    _ if counters.load.draining => RunnerState::Draining,
                    Health::Healthy => RunnerState::Healthy,
                    Health::Unhealthy => RunnerState::Unhealthy,
                    Health::Unknown => RunnerState::Unknown,
                };
                let report = self.reports.get(&backend.id());
                RunnerView {
                    id: backend.id(),
                    url: backend.url().to_string(),
                    runner_id: backend
                        .runner_id()
                        .or_else(|| report.map(|report| report.status.runner_id.clone())),
                    state,
                    sessions: counters.load.sessions,
                    kernels: counters.load.kernels,
                    proxied_sessions: counters.proxied_sessions,
                    placements: counters.placements,
                    version: report.map(|report| report.status.version.clone()),
                    host: report.and_then(|report| report.node.host.clone()),
                    role: report.and_then(|report| report.node.role),
                    kernels_started: report.map(|report| report.counters.kernels_started),
                    jobs_running: report.map(|report| report.counters.jobs_running),
                    jobs_finished: report.map(|report| report.counters.jobs_finished),
                }
            })
            .collect();

        let nodes: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(name, known)| {
                let beat = &known.report.heartbeat;
                let on_node: Vec<&RunnerView> = runners
                    .iter()
                    .filter(|runner| runner.runner_id.as_deref() == Some(name.as_str()))
                    .collect();
                let identity = self.identities.get(name).cloned().unwrap_or_default();
                let mut history = NodeHistory::default();
                for sample in self.samples.iter() {
                    let point = sample.nodes.iter().find(|point| point.name == *name);
                    history
                        .cpu_percent
                        .push(point.map(|point| point.cpu_percent));
                    history
                        .memory_percent
                        .push(point.and_then(|point| point.memory_percent));
                }
                NodeView {
                    name: name.clone(),
                    host: identity.host,
                    role: identity.role,
                    state: known.state,
                    cpu_percent: beat.cpu_percent,
                    memory_used_bytes: beat.memory_used_bytes,
                    memory_total_bytes: beat.memory_total_bytes,
                    slots: beat.slots,
                    running_jobs: beat.running.clone(),
                    runners: on_node.iter().map(|runner| runner.url.clone()).collect(),
                    kernels: on_node.iter().map(|runner| runner.kernels).sum(),
                    sessions: on_node.iter().map(|runner| runner.sessions).sum(),
                    updated_at: beat.updated_at,
                    history,
                }
            })
            .collect();

        let running_on = |keep: &dyn Fn(NodeState) -> bool| -> usize {
            self.nodes
                .values()
                .filter(|node| keep(node.state))
                .map(|node| node.report.heartbeat.running.len())
                .sum()
        };
        // The unfinished count includes the jobs on stale nodes until they are requeued.
        let holding = running_on(&|state| state != NodeState::Stopped);
        let jobs = JobsView {
            running: running_on(&|state| state == NodeState::Alive),
            queued: self
                .unfinished
                .map(|unfinished| unfinished.saturating_sub(holding)),
            finished: self
                .reports
                .values()
                .map(|report| report.counters.jobs_finished.total())
                .sum(),
        };

        let throughput = ThroughputView {
            times: self
                .samples
                .iter()
                .map(|sample| sample.at.timestamp_millis())
                .collect(),
            cells_per_second: self
                .samples
                .iter()
                .map(|sample| sample.cells_per_second)
                .collect(),
            jobs_per_minute: self
                .samples
                .iter()
                .map(|sample| sample.jobs_per_minute)
                .collect(),
            cells_total: self.cells_total,
        };

        Snapshot {
            generated_at: Utc::now(),
            sample_seconds: sample_every.as_secs_f64(),
            version: env!("CARGO_PKG_VERSION"),
            nodes,
            runners,
            jobs,
            throughput,
            events: events.recent(),
        }
    }

    /// Samples held now.
    #[cfg(test)]
    pub fn samples(&self) -> usize {
        self.samples.len()
    }
}

/// A percentage to one decimal: the charts need no more, and the JSON stays short.
fn tenths(value: f64) -> f32 {
    ((value * 10.0).round() / 10.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::least_connections::LeastConnections;
    use crate::cluster::observe::RunnerSeen;
    use cellgate_protocol::job::NodeHeartbeat;
    use cellgate_protocol::model::{FinalCounts, NodeRole, RunnerCounters, RunnerStatus};

    fn beat(node: &str, alive: bool, running: &[(&str, u32)]) -> NodeReport {
        NodeReport {
            heartbeat: NodeHeartbeat {
                node: node.into(),
                boot: "b".into(),
                sequence: 1,
                cpu_percent: 12.34,
                memory_used_bytes: 1 << 30,
                memory_total_bytes: 4 << 30,
                slots: 2,
                running: running
                    .iter()
                    .map(|(id, attempt)| RunningJob {
                        id: (*id).into(),
                        attempt: *attempt,
                    })
                    .collect(),
                updated_at: Utc::now(),
                stopped: false,
            },
            alive,
        }
    }

    fn runner(id: usize, runner_id: &str, finished: u64, unfinished: usize) -> RunnerSeen {
        RunnerSeen {
            id,
            url: format!("http://127.0.0.1:{}/", 9000 + id),
            draining: false,
            report: Some(RunnerReport {
                status: RunnerStatus {
                    runner_id: runner_id.into(),
                    version: "0".into(),
                    sessions: 0,
                    kernels: 1,
                    draining: false,
                },
                node: NodeIdentity {
                    host: Some(format!("host-{runner_id}")),
                    role: Some(NodeRole::Worker),
                },
                counters: RunnerCounters {
                    kernels_started: 1,
                    jobs_finished: FinalCounts {
                        succeeded: finished,
                        ..Default::default()
                    },
                    jobs_running: 0,
                    jobs_unfinished: Some(unfinished),
                },
            }),
        }
    }

    fn look(cells: u64, runners: Vec<RunnerSeen>, nodes: Vec<NodeReport>) -> Observation {
        Observation {
            cells_total: cells,
            runners,
            nodes: Some(nodes),
        }
    }

    const TWO: Duration = Duration::from_secs(2);

    fn kinds(events: &Events) -> Vec<EventKind> {
        events
            .recent()
            .iter()
            .rev()
            .map(|event| event.kind)
            .collect()
    }

    #[test]
    fn node_state_changes_and_requeued_jobs_become_events() {
        let events = Events::default();
        let mut view = View::default();
        let start = Utc::now();
        let at = |seconds: i64| start + chrono::TimeDelta::seconds(seconds);
        // A look before any runner could list the nodes, as at the gateway's start; then
        // the first list only learns what is there.
        view.record(Observation::default(), TWO, at(-2), &events);
        view.record(
            look(
                0,
                vec![],
                vec![beat("a", true, &[("j1", 1)]), beat("b", false, &[])],
            ),
            TWO,
            at(0),
            &events,
        );
        assert!(events.recent().is_empty());
        // a dies while running j1; j1 runs again on c, which joined.
        view.record(
            look(
                0,
                vec![],
                vec![beat("a", false, &[("j1", 1)]), beat("b", false, &[])],
            ),
            TWO,
            at(2),
            &events,
        );
        view.record(
            look(
                0,
                vec![],
                vec![
                    beat("a", false, &[("j1", 1)]),
                    beat("b", true, &[]),
                    beat("c", true, &[("j1", 2)]),
                ],
            ),
            TWO,
            at(4),
            &events,
        );
        let mut stopped = beat("c", false, &[]);
        stopped.heartbeat.stopped = true;
        view.record(
            look(0, vec![], vec![beat("a", false, &[("j1", 1)]), stopped]),
            TWO,
            at(6),
            &events,
        );
        assert_eq!(
            kinds(&events),
            vec![
                EventKind::NodeStale,
                EventKind::NodeBack,
                EventKind::NodeJoined,
                EventKind::JobRequeued,
                EventKind::NodeStopped,
            ]
        );
        let requeued = &events.recent()[1];
        assert_eq!(requeued.subject, "j1");
        assert_eq!(
            requeued.message,
            "runs again as attempt 2 on c; attempt 1 ran on a"
        );
        // b is no longer listed: it is no longer shown.
        let balancer = Balancer::new(LeastConnections);
        let snapshot = view.snapshot(&balancer, &events, TWO);
        let names: Vec<&str> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(snapshot.nodes[1].state, NodeState::Stopped);
    }

    #[test]
    fn throughput_series_follow_cells_and_finished_jobs() {
        let events = Events::default();
        let mut view = View::default();
        let start = Utc::now();
        let at = |seconds: i64| start + chrono::TimeDelta::seconds(seconds);
        let nodes = || vec![beat("n0", true, &[("j", 1)]), beat("n1", true, &[])];
        view.record(
            look(
                10,
                vec![runner(0, "n0", 5, 3), runner(1, "n1", 0, 3)],
                nodes(),
            ),
            TWO,
            at(0),
            &events,
        );
        view.record(
            look(
                30,
                vec![runner(0, "n0", 7, 2), runner(1, "n1", 1, 2)],
                nodes(),
            ),
            TWO,
            at(2),
            &events,
        );
        view.record(
            look(
                30,
                vec![runner(0, "n0", 7, 2), runner(1, "n1", 4, 2)],
                nodes(),
            ),
            TWO,
            at(4),
            &events,
        );
        // Past the one-minute window only the newest finishes count.
        view.record(
            look(
                34,
                vec![runner(0, "n0", 8, 2), runner(1, "n1", 4, 2)],
                nodes(),
            ),
            TWO,
            at(63),
            &events,
        );
        let snapshot = view.snapshot(&Balancer::new(LeastConnections), &events, TWO);
        let throughput = &snapshot.throughput;
        assert_eq!(throughput.cells_per_second, vec![0.0, 10.0, 0.0, 2.0]);
        assert_eq!(throughput.jobs_per_minute, vec![0.0, 3.0, 6.0, 4.0]);
        assert_eq!(throughput.cells_total, 34);
        assert_eq!(throughput.times.len(), 4);
        assert_eq!(snapshot.jobs.running, 1);
        assert_eq!(
            snapshot.jobs.queued,
            Some(1),
            "2 unfinished, 1 of them running"
        );
        assert_eq!(
            snapshot.jobs.finished, 12,
            "what the runners answering now have finished"
        );
        let n0 = &snapshot.nodes[0];
        assert_eq!(n0.host.as_deref(), Some("host-n0"));
        assert_eq!(n0.role, Some(NodeRole::Worker));
        assert_eq!(n0.history.cpu_percent, vec![Some(12.3); 4]);
        assert_eq!(n0.history.memory_percent, vec![Some(25.0); 4]);
    }

    #[test]
    fn a_draining_runner_is_reported_once() {
        let events = Events::default();
        let mut view = View::default();
        let mut seen = runner(0, "n0", 0, 0);
        view.record(
            look(0, vec![seen.clone()], vec![]),
            TWO,
            Utc::now(),
            &events,
        );
        seen.draining = true;
        for _ in 0..3 {
            view.record(
                look(0, vec![seen.clone()], vec![]),
                TWO,
                Utc::now(),
                &events,
            );
        }
        assert_eq!(kinds(&events), vec![EventKind::RunnerDraining]);
        assert_eq!(events.recent()[0].subject, "n0");
    }

    #[test]
    fn the_history_is_bounded() {
        let events = Events::default();
        let mut view = View::new(5);
        let start = Utc::now();
        for index in 0..12 {
            view.record(
                look(index, vec![], vec![beat("n", true, &[])]),
                TWO,
                start + chrono::TimeDelta::seconds(2 * index as i64),
                &events,
            );
        }
        assert_eq!(view.samples(), 5);
        let snapshot = view.snapshot(&Balancer::new(LeastConnections), &events, TWO);
        assert_eq!(snapshot.nodes[0].history.cpu_percent.len(), 5);
        assert_eq!(snapshot.throughput.cells_per_second, vec![0.5; 5]);
    }
}
