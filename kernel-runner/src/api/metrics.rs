//! What the runner counts about itself, for `GET /metrics` (the Prometheus text format) and
//! for the `node` and `counters` of `GET /api/runner`: kernels by state and started, open
//! sessions, batch job attempts run to a final state, the job queue, and this machine's CPU
//! and memory. Request handlers only read what is kept here; reading the volume, `/proc` and
//! the Docker engine is the work of [`RunnerMetrics::run`], one task beside the server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellgate_protocol::content::ExecutionState;
use cellgate_protocol::job::{JobState, JobStatus};
use cellgate_protocol::model::{FinalCounts, NodeIdentity, NodeRole, RunnerCounters, RunnerReport};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::prometheus::{Exposition, Kind};
use super::{identity, AppState};
use crate::jobs::nodes::{memory, CpuMeter};

/// How often the volume, `/proc` and (every [`IDENTITY_EVERY`] rounds) Docker are read.
const REFRESH: Duration = Duration::from_secs(5);

/// Docker is asked about the node once a minute: a node can be promoted or demoted.
const IDENTITY_EVERY: u64 = 12;

/// Attempts followed at once; past this the oldest is forgotten (an attempt whose end this
/// runner never hears of, because another node fenced it, would otherwise stay forever).
const MAX_FOLLOWED: usize = 4096;

#[derive(Debug)]
pub struct RunnerMetrics {
    kernels_started: AtomicU64,
    tally: Mutex<JobTally>,
    sampled: Mutex<Sampled>,
    cpu: Mutex<CpuMeter>,
}

/// What the last refresh read.
#[derive(Debug, Clone, Default)]
struct Sampled {
    cpu_percent: f64,
    memory_used_bytes: u64,
    memory_total_bytes: u64,
    jobs_unfinished: Option<usize>,
    jobs_running: usize,
    identity: NodeIdentity,
}

impl RunnerMetrics {
    /// Metrics of the runner whose batch worker calls its node `node`.
    pub fn new(node: &str) -> RunnerMetrics {
        RunnerMetrics {
            kernels_started: AtomicU64::new(0),
            tally: Mutex::new(JobTally::new(node)),
            sampled: Mutex::new(Sampled::default()),
            cpu: Mutex::new(CpuMeter::new()),
        }
    }

    pub fn kernel_started(&self) {
        self.kernels_started.fetch_add(1, Ordering::Relaxed);
    }

    /// A queued job was cancelled through this runner: it reached its final state here.
    pub fn queued_job_cancelled(&self) {
        lock(&self.tally).finished.cancelled += 1;
    }

    /// The `node` and `counters` parts of `GET /api/runner`, with the status beside them.
    pub fn report(&self, state: &AppState) -> RunnerReport {
        let sampled = lock(&self.sampled).clone();
        RunnerReport {
            status: state.manager.status(&state.runner_id),
            node: sampled.identity,
            counters: RunnerCounters {
                kernels_started: self.kernels_started.load(Ordering::Relaxed),
                jobs_finished: lock(&self.tally).finished,
                jobs_running: sampled.jobs_running,
                jobs_unfinished: sampled.jobs_unfinished,
            },
        }
    }

    /// `GET /metrics`.
    pub fn render(&self, state: &AppState) -> String {
        let report = self.report(state);
        let sampled = lock(&self.sampled).clone();
        // Every state is reported, even at zero, so a dashboard's series do not vanish.
        let mut by_state: BTreeMap<&'static str, usize> = ExecutionState::ALL
            .iter()
            .map(|state| (state.as_str(), 0))
            .collect();
        for kernel in state.manager.list() {
            *by_state.entry(kernel.execution_state.as_str()).or_insert(0) += 1;
        }
        let role = match report.node.role {
            Some(NodeRole::Manager) => "manager",
            Some(NodeRole::Worker) => "worker",
            None => "",
        };
        let mut out = Exposition::new();
        out.family(
            "cellgate_runner_info",
            Kind::Gauge,
            "The runner: its id, version, backend, and its node's host name and swarm role when known.",
        )
        .sample(
            "cellgate_runner_info",
            &[
                ("runner_id", &state.runner_id),
                ("version", env!("CARGO_PKG_VERSION")),
                ("backend", state.manager.backend_name()),
                ("host", report.node.host.as_deref().unwrap_or("")),
                ("role", role),
            ],
            1,
        );
        out.family(
            "cellgate_kernels",
            Kind::Gauge,
            "Kernels on this runner, by execution state.",
        );
        for (kernel_state, count) in &by_state {
            out.sample("cellgate_kernels", &[("state", kernel_state)], count);
        }
        out.single(
            "cellgate_sessions",
            Kind::Gauge,
            "Websocket sessions open on this runner's kernels.",
            report.status.sessions,
        );
        out.single(
            "cellgate_draining",
            Kind::Gauge,
            "Whether the runner is shutting down and takes no new kernels.",
            u8::from(report.status.draining),
        );
        out.single(
            "cellgate_kernels_started_total",
            Kind::Counter,
            "Kernels started through this runner's API.",
            report.counters.kernels_started,
        );
        out.single(
            "cellgate_jobs_running",
            Kind::Gauge,
            "Batch jobs this runner runs now.",
            report.counters.jobs_running,
        );
        let finished = report.counters.jobs_finished;
        out.family(
            "cellgate_jobs_finished_total",
            Kind::Counter,
            "Batch job attempts this runner ran to a final state, and queued jobs it cancelled, by state.",
        );
        for (job_state, count) in [
            ("succeeded", finished.succeeded),
            ("failed", finished.failed),
            ("timed_out", finished.timed_out),
            ("cancelled", finished.cancelled),
        ] {
            out.sample(
                "cellgate_jobs_finished_total",
                &[("state", job_state)],
                count,
            );
        }
        if let Some(unfinished) = report.counters.jobs_unfinished {
            out.single(
                "cellgate_jobs_unfinished",
                Kind::Gauge,
                "Jobs on the shared volume not finished yet (queued, or running on any node).",
                unfinished,
            );
        }
        out.single(
            "cellgate_node_cpu_percent",
            Kind::Gauge,
            "Percent of all of this machine's cores busy, over the last few seconds.",
            sampled.cpu_percent,
        );
        out.single(
            "cellgate_node_memory_used_bytes",
            Kind::Gauge,
            "This machine's memory in use (total less available).",
            sampled.memory_used_bytes,
        );
        out.single(
            "cellgate_node_memory_total_bytes",
            Kind::Gauge,
            "This machine's memory.",
            sampled.memory_total_bytes,
        );
        out.finish()
    }

    /// Keeps the figures fresh until `closing`: follows the job store's status changes,
    /// and every few seconds reads the queue, this node's heartbeat, `/proc` and (with the
    /// Docker backend, now and then) the engine's description of the node.
    pub async fn run(self: Arc<Self>, state: Arc<AppState>, closing: CancellationToken) {
        let store = state.jobs.as_ref().map(|jobs| jobs.worker.store().clone());
        let mut events = store.as_ref().map(|store| store.subscribe());
        let ask_docker = state.manager.backend_name() == "docker";
        let mut ticks = tokio::time::interval(REFRESH);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: u64 = 0;
        loop {
            tokio::select! {
                () = closing.cancelled() => return,
                _ = ticks.tick() => {
                    if ask_docker && round.is_multiple_of(IDENTITY_EVERY) {
                        self.refresh_identity().await;
                    }
                    round += 1;
                    self.refresh(&state).await;
                }
                event = next_event(&mut events) => match event {
                    Ok(status) => lock(&self.tally).observe(&status),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed job status changes; the job counts may be short");
                    }
                    Err(broadcast::error::RecvError::Closed) => events = None,
                },
            }
        }
    }

    async fn refresh_identity(&self) {
        match identity::ask_docker().await {
            Ok(identity) => lock(&self.sampled).identity = identity,
            Err(error) => {
                tracing::debug!(error = %chain(&error), "the node's host name and role stay unknown for now");
            }
        }
    }

    async fn refresh(self: &Arc<Self>, state: &AppState) {
        let store = state.jobs.as_ref().map(|jobs| jobs.worker.store().clone());
        let node = state
            .jobs
            .as_ref()
            .map(|jobs| jobs.worker.node().to_owned());
        let metrics = self.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cpu_percent = lock(&metrics.cpu).sample();
            let (used, total) = memory();
            let jobs = store.map(|store| {
                let unfinished = store.queue().map(|queue| queue.len());
                let running = store.heartbeats().map(|heartbeats| {
                    heartbeats
                        .iter()
                        .find(|heartbeat| Some(&heartbeat.node) == node.as_ref())
                        .map_or(0, |heartbeat| heartbeat.running.len())
                });
                (unfinished, running)
            });
            (cpu_percent, used, total, jobs)
        })
        .await;
        let Ok((cpu_percent, used, total, jobs)) = read else {
            return;
        };
        let mut sampled = lock(&self.sampled);
        sampled.cpu_percent = cpu_percent;
        sampled.memory_used_bytes = used;
        sampled.memory_total_bytes = total;
        if let Some((unfinished, running)) = jobs {
            // A failed read keeps the last figures: the volume hiccuped, the jobs did not.
            match unfinished {
                Ok(count) => sampled.jobs_unfinished = Some(count),
                Err(error) => tracing::debug!(%error, "cannot count the unfinished jobs"),
            }
            match running {
                Ok(count) => sampled.jobs_running = count,
                Err(error) => tracing::debug!(%error, "cannot read this node's heartbeat"),
            }
        }
    }
}

async fn next_event(
    events: &mut Option<broadcast::Receiver<JobStatus>>,
) -> Result<JobStatus, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Counts the attempts this runner ran to a final state, from the job store's status
/// changes. The store's changes are shared by every runner of a process on one volume, so
/// only attempts seen running on this node count: each attempt is counted by its runner.
#[derive(Debug)]
pub struct JobTally {
    node: String,
    /// Attempts seen running here, with the order they were seen in.
    followed: HashMap<(String, u32), u64>,
    seen: u64,
    pub finished: FinalCounts,
}

impl JobTally {
    pub fn new(node: &str) -> JobTally {
        JobTally {
            node: node.to_owned(),
            followed: HashMap::new(),
            seen: 0,
            finished: FinalCounts::default(),
        }
    }

    pub fn observe(&mut self, status: &JobStatus) {
        let key = (status.id.clone(), status.attempt);
        match &status.state {
            JobState::Running { node } if *node == self.node => {
                self.seen += 1;
                self.followed.insert(key, self.seen);
                if self.followed.len() > MAX_FOLLOWED {
                    let oldest = self
                        .followed
                        .iter()
                        .min_by_key(|(_, seen)| **seen)
                        .map(|(key, _)| key.clone());
                    if let Some(oldest) = oldest {
                        self.followed.remove(&oldest);
                    }
                }
            }
            JobState::Running { .. } => {}
            JobState::Queued => {
                // A requeue: the attempt before this one ended without a result.
                if let Some(previous) = status.attempt.checked_sub(1) {
                    self.followed.remove(&(status.id.clone(), previous));
                }
            }
            JobState::Succeeded | JobState::Failed | JobState::TimedOut | JobState::Cancelled => {
                if self.followed.remove(&key).is_none() {
                    return;
                }
                let count = match status.state {
                    JobState::Succeeded => &mut self.finished.succeeded,
                    JobState::Failed => &mut self.finished.failed,
                    JobState::TimedOut => &mut self.finished.timed_out,
                    _ => &mut self.finished.cancelled,
                };
                *count += 1;
            }
        }
    }
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value behind these locks is a set of counts; a panic elsewhere leaves them usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::job::JobKind;
    use chrono::Utc;

    fn status(id: &str, attempt: u32, state: JobState) -> JobStatus {
        JobStatus {
            id: id.into(),
            name: String::new(),
            kind: JobKind::Command,
            state,
            attempt,
            ran_on: None,
            exit_code: None,
            signal: None,
            oom: false,
            peak_memory_bytes: None,
            truncated: false,
            reason: None,
            result: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        }
    }

    fn running(id: &str, attempt: u32, node: &str) -> JobStatus {
        status(
            id,
            attempt,
            JobState::Running {
                node: node.to_owned(),
            },
        )
    }

    #[test]
    fn each_attempt_counts_once_on_the_runner_that_ran_it() {
        let mut here = JobTally::new("a");
        let mut there = JobTally::new("b");
        let changes = [
            running("j1", 1, "a"),
            status("j1", 1, JobState::Succeeded),
            running("j2", 1, "b"),
            status("j2", 1, JobState::TimedOut),
            // j3 ran here, its node was declared dead and it ran again elsewhere.
            running("j3", 1, "a"),
            status("j3", 2, JobState::Queued),
            running("j3", 2, "b"),
            status("j3", 2, JobState::Failed),
            // A queued job cancelled: nobody ran it, so no tally counts it.
            status("j4", 1, JobState::Cancelled),
        ];
        for change in &changes {
            here.observe(change);
            there.observe(change);
        }
        assert_eq!(
            here.finished,
            FinalCounts {
                succeeded: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            there.finished,
            FinalCounts {
                failed: 1,
                timed_out: 1,
                ..Default::default()
            }
        );
        // The same final status heard twice is counted once.
        here.observe(&status("j1", 1, JobState::Succeeded));
        assert_eq!(here.finished.total(), 1);
        assert!(here.followed.is_empty() && there.followed.is_empty());
    }

    #[test]
    fn attempts_never_heard_of_again_are_forgotten_past_the_bound() {
        let mut tally = JobTally::new("a");
        for index in 0..MAX_FOLLOWED + 10 {
            tally.observe(&running(&format!("j{index}"), 1, "a"));
        }
        assert_eq!(tally.followed.len(), MAX_FOLLOWED);
        assert!(!tally.followed.contains_key(&("j0".to_owned(), 1)));
        tally.observe(&status(
            &format!("j{}", MAX_FOLLOWED + 9),
            1,
            JobState::Succeeded,
        ));
        assert_eq!(tally.finished.succeeded, 1);
    }
}
