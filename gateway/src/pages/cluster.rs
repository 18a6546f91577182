//! `GET /cluster`: the cluster dashboard. The page arrives with the nodes, runners, job
//! counts and events of the moment already in its tables, so it reads without its script;
//! the script (`gateway/static/cluster.js`) then follows `GET /api/cluster/stream`, redraws
//! the tables and draws the CPU, memory and throughput charts.

use askama::Template;
use http::StatusCode;

use super::render;
use crate::cluster::snapshot::Snapshot;
use crate::error::GatewayError;
use crate::response::Response;
use crate::state::Gateway;

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    nodes: Vec<NodeRow>,
    runners: Vec<RunnerRow>,
    running: usize,
    queued: String,
    events: Vec<EventRow>,
    sample_seconds: u64,
    auth_enabled: bool,
    version: &'static str,
}

struct NodeRow {
    name: String,
    host: String,
    role: &'static str,
    state: &'static str,
    cpu: String,
    memory: String,
    runners: String,
    kernels: usize,
    jobs: String,
}

struct RunnerRow {
    url: String,
    runner_id: String,
    state: &'static str,
    sessions: usize,
    kernels: usize,
}

struct EventRow {
    at: String,
    kind: String,
    subject: String,
    message: String,
}

pub fn page(gateway: &Gateway) -> Result<Response, GatewayError> {
    let snapshot = gateway.cluster.snapshot(&gateway.balancer);
    render(
        StatusCode::OK,
        "cluster",
        &rows(&snapshot, gateway.auth.is_enabled()),
    )
}

fn rows(snapshot: &Snapshot, auth_enabled: bool) -> ClusterPage {
    let nodes = snapshot
        .nodes
        .iter()
        .map(|node| NodeRow {
            name: node.name.clone(),
            host: node.host.clone().unwrap_or_default(),
            role: role_label(node.role),
            state: node.state.label(),
            cpu: format!("{:.0} %", node.cpu_percent),
            memory: format!(
                "{} of {}",
                bytes(node.memory_used_bytes),
                bytes(node.memory_total_bytes)
            ),
            runners: node.runners.join(", "),
            kernels: node.kernels,
            jobs: format!("{} of {} slots", node.running_jobs.len(), node.slots),
        })
        .collect();
    let runners = snapshot
        .runners
        .iter()
        .map(|runner| RunnerRow {
            url: runner.url.clone(),
            runner_id: runner.runner_id.clone().unwrap_or_default(),
            state: runner.state.label(),
            sessions: runner.sessions,
            kernels: runner.kernels,
        })
        .collect();
    let events = snapshot
        .events
        .iter()
        .map(|event| EventRow {
            at: event.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            kind: serde_json::to_value(event.kind)
                .ok()
                .and_then(|kind| kind.as_str().map(|kind| kind.replace('_', " ")))
                .unwrap_or_default(),
            subject: event.subject.clone(),
            message: event.message.clone(),
        })
        .collect();
    ClusterPage {
        nodes,
        runners,
        running: snapshot.jobs.running,
        queued: snapshot
            .jobs
            .queued
            .map_or_else(|| "?".to_owned(), |queued| queued.to_string()),
        events,
        sample_seconds: snapshot.sample_seconds.round() as u64,
        auth_enabled,
        version: snapshot.version,
    }
}

fn role_label(role: Option<cellgate_protocol::model::NodeRole>) -> &'static str {
    match role {
        Some(cellgate_protocol::model::NodeRole::Manager) => "manager",
        Some(cellgate_protocol::model::NodeRole::Worker) => "worker",
        None => "unknown",
    }
}

/// Bytes in binary units, one decimal.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4 << 30), "4.0 GiB");
    }
}
