//! The JSON models of the Jupyter kernel REST API, and of the runner's status report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::content::ExecutionState;

/// `GET /api/kernels/{id}`: one kernel, exactly as jupyter_server describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelModel {
    pub id: String,
    pub name: String,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub last_activity: String,
    pub execution_state: ExecutionState,
    pub connections: usize,
    /// Why a dead kernel died; absent while it lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/kernels` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateKernel {
    #[serde(default)]
    pub name: Option<String>,
    /// A kernel id chosen by the client; it must be a UUID not in use.
    #[serde(default)]
    pub kernel_id: Option<String>,
    /// Variables for the kernel's environment; only `KERNEL_*` names and the runner's
    /// allow-list pass, the rest are dropped.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub path: Option<String>,
    /// Lower resource limits for this kernel's sandbox; more than the runner allows is refused.
    #[serde(default)]
    pub limits: Option<KernelLimits>,
}

/// Resource limits a kernel request may ask for; each one left out takes the runner's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelLimits {
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPUs as a fraction: 0.5 is half a core.
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub pids: Option<u64>,
}

/// The `spec` of a kernelspec: what `kernel.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpecFile {
    pub argv: Vec<String>,
    pub display_name: String,
    pub language: String,
    #[serde(default = "default_interrupt_mode")]
    pub interrupt_mode: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

fn default_interrupt_mode() -> String {
    "signal".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    pub name: String,
    pub spec: KernelSpecFile,
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
}

/// `GET /api/kernelspecs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpecs {
    pub default: String,
    pub kernelspecs: BTreeMap<String, KernelSpec>,
}

/// Every error answer of the REST API: `{reason, message}` as jupyter_server sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub reason: String,
    pub message: String,
}

/// `GET /api/runner` on a kernel runner: what a gateway needs to place kernels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerStatus {
    pub runner_id: String,
    pub version: String,
    /// Websocket sessions open right now, over all kernels.
    pub sessions: usize,
    pub kernels: usize,
    /// True while the runner shuts down: it takes no new kernels.
    pub draining: bool,
}

/// `GET /api/runner` in full: the [`RunnerStatus`] gateways place kernels by, and what the
/// cluster page shows besides. Every addition is optional, so a gateway reads the report of
/// an older runner, and an older gateway reads this one as a plain [`RunnerStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerReport {
    #[serde(flatten)]
    pub status: RunnerStatus,
    #[serde(default)]
    pub node: NodeIdentity,
    #[serde(default)]
    pub counters: RunnerCounters,
}

/// The machine a runner is on, as its container engine names it; unknown with the process
/// backend, which has no engine to ask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The engine's host name (a swarm node's hostname).
    #[serde(default)]
    pub host: Option<String>,
    /// The node's role in the swarm; `None` when unknown or not in a swarm.
    #[serde(default)]
    pub role: Option<NodeRole>,
}

/// A Docker Swarm node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Manager,
    Worker,
}

/// What a runner has counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerCounters {
    /// Kernels started through its API.
    #[serde(default)]
    pub kernels_started: u64,
    /// Batch job attempts it ran to a final state, and queued jobs it cancelled.
    #[serde(default)]
    pub jobs_finished: FinalCounts,
    /// Batch jobs it runs now, as its last heartbeat listed them.
    #[serde(default)]
    pub jobs_running: usize,
    /// Jobs on the volume not finished yet (queued, or running on any node), as last
    /// counted; `None` without a job volume.
    #[serde(default)]
    pub jobs_unfinished: Option<usize>,
}

/// Counts by final job state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCounts {
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub timed_out: u64,
    #[serde(default)]
    pub cancelled: u64,
}

impl FinalCounts {
    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.timed_out + self.cancelled
    }
}

/// The header a gateway sends to prove itself to a runner.
pub const RUNNER_SECRET_HEADER: &str = "x-cellgate-runner-secret";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kernel_model_has_the_jupyter_fields_only() {
        let model = KernelModel {
            id: "k".into(),
            name: "python3".into(),
            last_activity: "2024-01-01T00:00:00.000000Z".into(),
            execution_state: ExecutionState::Idle,
            connections: 2,
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&model).unwrap(),
            json!({"id": "k", "name": "python3", "last_activity": "2024-01-01T00:00:00.000000Z",
                   "execution_state": "idle", "connections": 2})
        );
    }

    #[test]
    fn runner_reports_and_plain_statuses_read_each_other() {
        let old_runner = json!({"runner_id": "r", "version": "0", "sessions": 1, "kernels": 2,
                                "draining": false});
        let report: RunnerReport = serde_json::from_value(old_runner).unwrap();
        assert_eq!(report.node, NodeIdentity::default());
        assert_eq!(report.counters.jobs_unfinished, None);
        let new_runner = json!({"runner_id": "r", "version": "0", "sessions": 1, "kernels": 2,
                                "draining": true, "node": {"host": "n1", "role": "worker"},
                                "counters": {"kernels_started": 3,
                                             "jobs_finished": {"succeeded": 4, "cancelled": 1}}});
        let status: RunnerStatus = serde_json::from_value(new_runner.clone()).unwrap();
        assert!(status.draining);
        let report: RunnerReport = serde_json::from_value(new_runner).unwrap();
        assert_eq!(report.node.role, Some(NodeRole::Worker));
        assert_eq!(report.counters.jobs_finished.total(), 5);
    }

    #[test]
    fn create_kernel_accepts_an_empty_body_and_jupyter_extras() {
        let create: CreateKernel = serde_json::from_value(json!({})).unwrap();
        assert!(create.name.is_none() && create.env.is_empty());
        let create: CreateKernel =
            serde_json::from_value(json!({"name": "bash", "path": "x", "env": {"KERNEL_A": "1"}}))
                .unwrap();
        assert_eq!(create.env["KERNEL_A"], "1");
    }
}
