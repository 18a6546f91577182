//! What an ended attempt means for its job: the state and reason to publish, and whether the
//! job goes back to the queue for another attempt.

use cellgate_protocol::job::{JobSpec, JobState, JobTask};

use super::execute::Execution;

/// The decision about an ended attempt, before anything is written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The attempt's state: final, or `Queued` when the runner stopped under it.
    pub state: JobState,
    /// Why the job failed, timed out, was cancelled or is queued again, in words.
    pub reason: Option<String>,
    /// Whether the job is queued again: a stopped runner, or a failure or timeout with
    /// retries left.
    pub requeue: bool,
    /// The result to publish: an MD5 job's digest, once it succeeded.
    pub result: Option<String>,
}

/// Classifies `execution`, attempt number `attempt` (from 1) of `spec` on `node`.
/// `user_cancel` says that a stop came from a user's cancel rather than the runner shutting
/// down.
pub fn outcome(
    spec: &JobSpec,
    attempt: u32,
    node: &str,
    execution: &Execution,
    user_cancel: bool,
) -> Outcome {
    let (state, reason) = if execution.stopped && user_cancel {
        (JobState::Cancelled, Some("killed on request".to_owned()))
    } else if execution.stopped {
        // The runner is stopping: the attempt goes back to the queue for another runner.
        (JobState::Queued, Some(format!("runner {node} stopped")))
    } else if execution.timed_out {
        (
            JobState::TimedOut,
            Some(format!(
                "killed after the wall timeout of {} s",
                spec.limits.timeout_seconds
            )),
        )
    } else if execution.succeeded() {
        (JobState::Succeeded, None)
    } else {
        let reason = execution
            .error
            .clone()
            .unwrap_or_else(|| describe(execution));
        (JobState::Failed, Some(reason))
    };
    let retry =
        matches!(state, JobState::Failed | JobState::TimedOut) && attempt <= spec.limits.retries;
    let requeue = retry || state == JobState::Queued;
    let result = match (&spec.task, &state) {
        (JobTask::Md5, JobState::Succeeded) => execution.result.clone(),
        _ => None,
    };
    Outcome {
        state,
        reason,
        requeue,
        result,
    }
}

/// Why a program that ran ended badly, from how it ended.
fn describe(execution: &Execution) -> String {
    if execution.oom {
        return "killed: out of memory".to_owned();
    }
    match (execution.exit_code, execution.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended for an unknown reason".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use cellgate_protocol::job::JobLimits;
    use chrono::Utc;

    use super::*;

    const NODE: &str = "node-1";

    fn spec(task: JobTask, retries: u32) -> JobSpec {
        JobSpec {
            id: uuid::Uuid::new_v4().to_string(),
            name: "a job".into(),
            task,
            inputs: vec!["input".into()],
            stdin: false,
            limits: JobLimits {
                timeout_seconds: 2.5,
                cpus: 1.0,
                memory_bytes: 64 << 20,
                retries,
                output_bytes: 1 << 20,
            },
            created_at: Utc::now(),
        }
    }

    fn command(retries: u32) -> JobSpec {
        spec(
            JobTask::Command {
                image: "bash".into(),
                command: "true".into(),
            },
            retries,
        )
    }

    fn exited(code: i32) -> Execution {
        Execution {
            exit_code: Some(code),
            ..Execution::default()
        }
    }

    fn failed(reason: &str, requeue: bool) -> Outcome {
        Outcome {
            state: JobState::Failed,
            reason: Some(reason.to_owned()),
            requeue,
            result: None,
        }
    }

    #[test]
    fn a_cancel_on_request_is_final_even_with_retries_left() {
        let stopped = Execution {
            stopped: true,
            ..Execution::default()
        };
        assert_eq!(
            outcome(&command(3), 1, NODE, &stopped, true),
            Outcome {
                state: JobState::Cancelled,
                reason: Some("killed on request".into()),
                requeue: false,
                result: None,
            }
        );
    }

    #[test]
    fn a_cancel_that_came_after_the_program_ended_does_not_change_its_outcome() {
        assert_eq!(
            outcome(&command(0), 1, NODE, &exited(0), true).state,
            JobState::Succeeded
        );
        assert_eq!(
            outcome(&command(0), 1, NODE, &exited(2), true),
            failed("exited with status 2", false)
        );
    }

    #[test]
    fn a_stopping_runner_requeues_the_attempt_even_without_retries() {
        let stopped = Execution {
            stopped: true,
            timed_out: true,
            ..Execution::default()
        };
        assert_eq!(
            outcome(&command(0), 1, NODE, &stopped, false),
            Outcome {
                state: JobState::Queued,
                reason: Some("runner node-1 stopped".into()),
                requeue: true,
                result: None,
            }
        );
    }

    #[test]
    fn a_wall_timeout_is_retried_while_retries_are_left() {
        let timed_out = Execution {
            timed_out: true,
            signal: Some(9),
            ..Execution::default()
        };
        let expected = |requeue| Outcome {
            state: JobState::TimedOut,
            reason: Some("killed after the wall timeout of 2.5 s".into()),
            requeue,
            result: None,
        };
        assert_eq!(
            outcome(&command(1), 1, NODE, &timed_out, false),
            expected(true)
        );
        assert_eq!(
            outcome(&command(1), 2, NODE, &timed_out, false),
            expected(false)
        );
        assert_eq!(
            outcome(&command(0), 1, NODE, &timed_out, false),
            expected(false)
        );
    }

    #[test]
    fn a_succeeded_md5_job_keeps_its_digest() {
        let hashed = Execution {
            exit_code: Some(0),
            result: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            ..Execution::default()
        };
        assert_eq!(
            outcome(&spec(JobTask::Md5, 2), 1, NODE, &hashed, false),
            Outcome {
                state: JobState::Succeeded,
                reason: None,
                requeue: false,
                result: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            }
        );
    }

    #[test]
    fn only_md5_jobs_that_succeeded_publish_a_result() {
        let with_result = |execution: Execution| Execution {
            result: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            ..execution
        };
        let program = outcome(&command(0), 1, NODE, &with_result(exited(0)), false);
        assert_eq!(program.state, JobState::Succeeded);
        assert_eq!(program.result, None);
        let md5_failed = outcome(
            &spec(JobTask::Md5, 0),
            1,
            NODE,
            &with_result(exited(1)),
            false,
        );
        assert_eq!(md5_failed.state, JobState::Failed);
        assert_eq!(md5_failed.result, None);
    }

    #[test]
    fn a_failure_to_start_is_reported_with_its_error_and_retried() {
        let execution = Execution::failed_to_start("no such image".into());
        assert_eq!(
            outcome(&command(1), 1, NODE, &execution, false),
            failed("no such image", true)
        );
        assert_eq!(
            outcome(&command(1), 2, NODE, &execution, false),
            failed("no such image", false)
        );
    }

    #[test]
    fn an_error_wins_over_the_exit_status() {
        let execution = Execution {
            error: Some("the output volume is full".into()),
            ..exited(0)
        };
        assert_eq!(
            outcome(&command(0), 1, NODE, &execution, false),
            failed("the output volume is full", false)
        );
    }

    #[test]
    fn a_nonzero_exit_is_described_by_its_status() {
        assert_eq!(
            outcome(&command(0), 1, NODE, &exited(3), false),
            failed("exited with status 3", false)
        );
        assert_eq!(
            outcome(&command(2), 2, NODE, &exited(3), false),
            failed("exited with status 3", true)
        );
    }

    #[test]
    fn an_out_of_memory_kill_is_named_as_such() {
        let execution = Execution {
            oom: true,
            signal: Some(9),
            exit_code: Some(0),
            ..Execution::default()
        };
        assert_eq!(
            outcome(&command(0), 1, NODE, &execution, false),
            failed("killed: out of memory", false)
        );
    }

    #[test]
    fn a_kill_by_signal_names_the_signal() {
        let execution = Execution {
            signal: Some(11),
            exit_code: Some(139),
            ..Execution::default()
        };
        assert_eq!(
            outcome(&command(0), 1, NODE, &execution, false),
            failed("killed by signal 11", false)
        );
    }

    #[test]
    fn an_end_without_status_or_signal_is_unknown() {
        assert_eq!(
            outcome(&command(0), 1, NODE, &Execution::default(), false),
            failed("ended for an unknown reason", false)
        );
    }
}
