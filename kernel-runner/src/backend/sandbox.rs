//! The sandbox every kernel container gets: no network, a read-only root, size-capped tmpfs
//! for `/tmp` and the home directory, a non-root user, no capabilities, no privilege gain,
//! and limits on processes, memory (swap included), CPU, open files and file size.

use std::collections::HashMap;

use bollard::container::Config;
use bollard::models::{HostConfig, ResourcesUlimits};
use serde::{Deserialize, Serialize};

/// The user every kernel runs as; the images create it with this id.
pub const KERNEL_USER: &str = "1000:1000";
/// The kernel's home and working directory inside its container.
pub const KERNEL_HOME: &str = "/home/cellgate";

/// Resource limits of one kernel. The runner's settings are the ceiling; a kernel request
/// may ask for less, never more.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPUs as a fraction: 0.5 is half a core.
    pub cpus: f64,
    pub pids: u64,
    /// Size of the kernel's home directory (a tmpfs, counted against memory).
    pub home_bytes: u64,
    pub tmp_bytes: u64,
    pub open_files: u64,
    /// The largest file a kernel may write.
    pub file_size_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 1024 * 1024 * 1024,
            cpus: 1.0,
            pids: 256,
            home_bytes: 256 * 1024 * 1024,
            tmp_bytes: 64 * 1024 * 1024,
            open_files: 1024,
            file_size_bytes: 128 * 1024 * 1024,
        }
    }
}

/// What a kernel request may ask for; every field left out takes the runner's value.
pub use cellgate_protocol::model::KernelLimits as RequestedLimits;

impl Limits {
    /// These limits lowered to what `request` asks; asking for more than the ceiling is an
    /// error naming every field that does.
    pub fn narrowed(&self, request: &RequestedLimits) -> Result<Limits, String> {
        let mut problems = Vec::new();
        let mut limits = *self;
        if let Some(memory) = request.memory_bytes {
            if memory > self.memory_bytes || memory < 16 * 1024 * 1024 {
                problems.push(format!(
                    "memory_bytes {memory} is not between 16 MiB and the runner's {}",
                    self.memory_bytes
                ));
            }
            limits.memory_bytes = memory;
        }
        if let Some(cpus) = request.cpus {
            if !(cpus > 0.0 && cpus <= self.cpus) {
                problems.push(format!(
                    "cpus {cpus} is not above 0 and at most the runner's {}",
                    self.cpus
                ));
            }
            limits.cpus = cpus;
        }
        if let Some(pids) = request.pids {
            if pids > self.pids || pids < 8 {
                problems.push(format!(
                    "pids {pids} is not between 8 and the runner's {}",
                    self.pids
                ));
            }
            limits.pids = pids;
        }
        if problems.is_empty() {
            Ok(limits)
        } else {
            Err(problems.join("; "))
        }
    }

    /// A container for a sandboxed program whose standard streams the runner attaches to:
    /// the kernel user, no network unless one is named, these limits. The caller adds the
    /// image, the command and the environment.
    pub fn attached_container(
        &self,
        network: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Config<String> {
        Config {
            user: Some(KERNEL_USER.to_owned()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            tty: Some(false),
            network_disabled: Some(network.is_none()),
            labels: Some(labels),
            host_config: Some(self.host_config(network)),
            ..Default::default()
        }
    }

    /// The Docker host configuration that enforces these limits.
    pub fn host_config(&self, network: Option<&str>) -> HostConfig {
        let tmpfs = HashMap::from([
            (
                "/tmp".to_owned(),
                format!("rw,exec,nosuid,nodev,size={},mode=1777", self.tmp_bytes),
            ),
            (
                KERNEL_HOME.to_owned(),
                format!(
                    "rw,exec,nosuid,nodev,size={},uid=1000,gid=1000,mode=0700",
                    self.home_bytes
                ),
            ),
        ]);
        // Docker mounts tmpfs `noexec` unless told otherwise; kernels compile and run programs
        // in their home and /tmp, and nosuid plus a non-root user keep that harmless.
        let ulimit = |name: &str, value: u64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(value as i64),
            hard: Some(value as i64),
        };
        HostConfig {
            network_mode: Some(network.unwrap_or("none").to_owned()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            pids_limit: Some(self.pids as i64),
            memory: Some(self.memory_bytes as i64),
            // Swap equal to memory means no swap at all: a balloon is killed, not paged out.
            memory_swap: Some(self.memory_bytes as i64),
            nano_cpus: Some((self.cpus * 1e9) as i64),
            ulimits: Some(vec![
                ulimit("nofile", self.open_files),
                ulimit("fsize", self.file_size_bytes),
            ]),
            // The images bring their own init (tini), which forwards interrupts to the
            // driver's process group.
            init: Some(false),
            auto_remove: Some(false),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_may_lower_limits_but_never_raise_them() {
        let ceiling = Limits::default();
        let lower = ceiling
            .narrowed(&RequestedLimits {
                memory_bytes: Some(256 * 1024 * 1024),
                cpus: Some(0.5),
                pids: None,
            })
            .unwrap();
        assert_eq!(lower.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(lower.cpus, 0.5);
        assert_eq!(lower.pids, ceiling.pids);
        let error = ceiling
            .narrowed(&RequestedLimits {
                memory_bytes: Some(u64::MAX),
                cpus: Some(64.0),
                pids: Some(1_000_000),
            })
            .unwrap_err();
        assert!(error.contains("memory_bytes") && error.contains("cpus") && error.contains("pids"));
    }

    #[test]
    fn host_config_locks_the_container_down() {
        let config = Limits::default().host_config(None);
        assert_eq!(config.network_mode.as_deref(), Some("none"));
        assert_eq!(config.readonly_rootfs, Some(true));
        assert_eq!(config.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(config.memory, config.memory_swap);
        assert!(config
            .security_opt
            .unwrap()
            .contains(&"no-new-privileges".to_owned()));
        assert!(
            config.binds.is_none(),
            "no host path, the Docker socket least of all"
        );
        assert!(config.tmpfs.unwrap()[KERNEL_HOME].contains("size="));
    }
}
