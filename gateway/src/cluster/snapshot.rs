//! `GET /api/cluster`: the cluster at one moment, as JSON. Nodes with their state, load and
//! a short history, the runners behind this gateway, the job counts, the throughput series
//! and the latest events. Series are oldest first and aligned with `throughput.times`
//! (milliseconds since the Unix epoch), with `null` where a node had no figure.

use cellgate_protocol::job::RunningJob;
use cellgate_protocol::model::{FinalCounts, NodeRole};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::events::Event;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub generated_at: DateTime<Utc>,
    /// The time between two samples of the series.
    pub sample_seconds: f64,
    pub version: &'static str,
    pub nodes: Vec<NodeView>,
    pub runners: Vec<RunnerView>,
    pub jobs: JobsView,
    pub throughput: ThroughputView,
    /// Newest first.
    pub events: Vec<Event>,
}

/// A node as its heartbeat on the job volume describes it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The node name heartbeats and job leases use (the runner's id).
    pub name: String,
    /// The machine's host name, when its runner could ask the container engine.
    pub host: Option<String>,
    /// Manager or worker, when the machine is in a swarm and its runner could ask.
    pub role: Option<NodeRole>,
    pub state: NodeState,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Jobs it runs at once at most.
    pub slots: usize,
    pub running_jobs: Vec<RunningJob>,
    /// The balancer's runners on this node, by URL.
    pub runners: Vec<String>,
    pub kernels: usize,
    pub sessions: usize,
    pub updated_at: DateTime<Utc>,
    pub history: NodeHistory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Alive,
    /// Its heartbeat stopped changing: it is taken for dead and its jobs go elsewhere.
    Stale,
    /// It said it stopped.
    Stopped,
}

impl NodeState {
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Stale => "stale",
            NodeState::Stopped => "stopped",
        }
    }
}

/// A node's figures over the kept samples, in percent, `null` while it was not alive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeHistory {
    pub cpu_percent: Vec<Option<f32>>,
    pub memory_percent: Vec<Option<f32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunnerView {
    /// Its balancer id, stable for this gateway's lifetime.
    pub id: usize,
    pub url: String,
    pub runner_id: Option<String>,
    pub state: RunnerState,
    pub sessions: usize,
    pub kernels: usize,
    /// Websocket sessions this gateway proxies to it now.
    pub proxied_sessions: usize,
    /// Kernels this gateway started on it.
    pub placements: u64,
    /// From its last report; `None` before the first or from an older runner.
    pub version: Option<String>,
    pub host: Option<String>,
    pub role: Option<NodeRole>,
    pub kernels_started: Option<u64>,
    pub jobs_running: Option<usize>,
    pub jobs_finished: Option<FinalCounts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Not checked yet.
    Unknown,
    Healthy,
    /// Its last check failed: no new kernels; its sessions go on.
    Unhealthy,
    /// Shutting down: no new kernels; open sessions may finish.
    Draining,
    /// Gone: its sessions are closed and its kernels reported dead.
    Gone,
}

impl RunnerState {
    pub fn label(self) -> &'static str {
        match self {
            RunnerState::Unknown => "unknown",
            RunnerState::Healthy => "healthy",
            RunnerState::Unhealthy => "unhealthy",
            RunnerState::Draining => "draining",
            RunnerState::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct JobsView {
    /// Jobs running on nodes that are alive.
    pub running: usize,
    /// Jobs waiting for a slot; `None` when no runner has counted the queue.
    pub queued: Option<usize>,
    /// Jobs the runners answering now have finished since they started.
    pub finished: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ThroughputView {
    /// When each sample was taken, in milliseconds since the Unix epoch.
    pub times: Vec<i64>,
    /// Execute requests answered through this gateway, per second since the sample before.
    pub cells_per_second: Vec<f64>,
    /// Jobs the runners finished in the minute up to each sample.
    pub jobs_per_minute: Vec<f64>,
    /// Execute requests answered through this gateway since it started.
    pub cells_total: u64,
}
