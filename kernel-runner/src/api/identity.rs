//! Which machine this runner is on, and that machine's role in the swarm, as the container
//! engine reports them (`docker info`: the host name, and `Swarm.ControlAvailable`, true on
//! managers). Only the Docker backend has an engine to ask; with the process backend both
//! stay unknown.

use std::time::Duration;

use bollard::models::{LocalNodeState, SystemInfo};
use bollard::Docker;
use cellgate_protocol::model::{NodeIdentity, NodeRole};

/// How long the engine may take to answer; it is asked again later either way.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot ask the Docker engine about its node")]
    Docker {
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the Docker engine did not describe its node within {ASK_TIMEOUT:?}")]
    Timeout,
}

/// Asks the local engine (the socket the Docker backend uses).
pub async fn ask_docker() -> Result<NodeIdentity, IdentityError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|source| IdentityError::Docker { source })?;
    let info = tokio::time::timeout(ASK_TIMEOUT, docker.info())
        .await
        .map_err(|_| IdentityError::Timeout)?
        .map_err(|source| IdentityError::Docker { source })?;
    Ok(identity_of(&info))
}

/// The identity an engine's `info` describes. A node that is not an active swarm member
/// has no role.
pub fn identity_of(info: &SystemInfo) -> NodeIdentity {
    let role = info.swarm.as_ref().and_then(|swarm| {
        (swarm.local_node_state == Some(LocalNodeState::ACTIVE)).then(|| {
            if swarm.control_available == Some(true) {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            }
        })
    });
    NodeIdentity {
        host: info.name.clone().filter(|name| !name.is_empty()),
        role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SwarmInfo;

    fn info(state: Option<LocalNodeState>, control: Option<bool>) -> SystemInfo {
        SystemInfo {
            name: Some("node-1".into()),
            swarm: Some(SwarmInfo {
                local_node_state: state,
                control_available: control,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn managers_workers_and_nodes_outside_a_swarm() {
        let manager = identity_of(&info(Some(LocalNodeState::ACTIVE), Some(true)));
        assert_eq!(manager.role, Some(NodeRole::Manager));
        assert_eq!(manager.host.as_deref(), Some("node-1"));
        let worker = identity_of(&info(Some(LocalNodeState::ACTIVE), Some(false)));
        assert_eq!(worker.role, Some(NodeRole::Worker));
        let alone = identity_of(&info(Some(LocalNodeState::INACTIVE), None));
        assert_eq!(alone.role, None);
        assert_eq!(alone.host.as_deref(), Some("node-1"));
        assert_eq!(identity_of(&SystemInfo::default()), NodeIdentity::default());
    }
}
