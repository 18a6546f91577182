//! Batch jobs on the wire and on the shared volume: what a client asks for, the spec a job
//! directory holds, its status, and the heartbeat a runner node publishes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::closed_names;

/// The longest file name accepted for an input, in bytes.
pub const MAX_FILE_NAME: usize = 200;

/// The languages a `run` job may name, each with the image (without prefix and tag) it runs
/// in; the runner knows how to run each.
pub const BATCH_LANGUAGES: [(&str, &str); 12] = [
    ("python", "python"),
    ("javascript", "javascript"),
    ("bash", "bash"),
    ("ruby", "ruby"),
    ("php", "php"),
    ("r", "r"),
    ("octave", "octave"),
    ("java", "java"),
    ("c", "c"),
    ("cpp", "c"),
    ("go", "go"),
    ("rust", "rust"),
];

/// The batch language of a file from its extension, when it says.
pub fn guess_language(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1;
    Some(match extension {
        "py" => "python",
        "js" | "mjs" => "javascript",
        "sh" | "bash" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "R" | "r" => "r",
        "m" => "octave",
        "java" => "java",
        "c" => "c",
        "cc" | "cpp" | "cxx" => "cpp",
        "go" => "go",
        "rs" => "rust",
        _ => return None,
    })
}

/// The images a `command` job may name: those of the batch languages, each once.
pub fn job_images() -> Vec<&'static str> {
    let mut images: Vec<&'static str> = Vec::new();
    for (_, image) in BATCH_LANGUAGES {
        if !images.contains(&image) {
            images.push(image);
        }
    }
    images
}

/// Output files a job may have, the only names `GET /api/jobs/{id}/files/{name}` serves.
pub const OUTPUT_FILES: [&str; 3] = ["stdout", "stderr", "result"];

closed_names! {
    /// What sort of job a request asks for, and a status reports: the `kind` of [`JobTask`].
    pub enum JobKind: "job kind" {
        Md5 = "md5",
        Run = "run",
        Command = "command",
    }
}

/// What a job does. The input files are named in the job's `inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobTask {
    /// The hex MD5 of the job's one input file, computed natively by the runner.
    Md5,
    /// Source files in a language: the first of `files` is the program, the others sit next
    /// to it; compiled languages compile it first.
    Run {
        language: String,
        #[serde(default)]
        files: Vec<String>,
        #[serde(default)]
        args: Vec<String>,
    },
    /// A command line run with `sh -c` inside a container of `image`.
    Command { image: String, command: String },
}

impl JobTask {
    pub fn kind(&self) -> JobKind {
        match self {
            JobTask::Md5 => JobKind::Md5,
            JobTask::Run { .. } => JobKind::Run,
            JobTask::Command { .. } => JobKind::Command,
        }
    }
}

/// Per-job limits as a client asks for them; absent fields take the server's defaults, and
/// values above the server's maximum are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedJobLimits {
    /// Wall-clock seconds the whole job (compilation included) may take.
    pub timeout_seconds: Option<f64>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// How many more times a failed attempt is tried again.
    pub retries: Option<u32>,
    /// Bytes each of stdout and stderr may hold; the rest is dropped and `truncated` set.
    pub output_bytes: Option<u64>,
}

/// The limits a job runs under, resolved against the server's defaults and maximums.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobLimits {
    pub timeout_seconds: f64,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub retries: u32,
    pub output_bytes: u64,
}

impl JobLimits {
    /// `requested` applied to these defaults, checked against `max`; every field that is out
    /// of range is named in the error.
    pub fn resolve(
        &self,
        requested: &RequestedJobLimits,
        max: &JobLimits,
    ) -> Result<JobLimits, String> {
        let mut problems = Vec::new();
        let mut limits = *self;
        if let Some(timeout) = requested.timeout_seconds {
            if !(timeout > 0.0 && timeout <= max.timeout_seconds) {
                problems.push(format!(
                    "timeout_seconds {timeout} is not above 0 and at most {}",
                    max.timeout_seconds
                ));
            }
            limits.timeout_seconds = timeout;
        }
        if let Some(cpus) = requested.cpus {
            if !(cpus > 0.0 && cpus <= max.cpus) {
                problems.push(format!(
                    "cpus {cpus} is not above 0 and at most {}",
                    max.cpus
                ));
            }
            limits.cpus = cpus;
        }
        if let Some(memory) = requested.memory_bytes {
            if !(16 * 1024 * 1024..=max.memory_bytes).contains(&memory) {
                problems.push(format!(
                    "memory_bytes {memory} is not between 16 MiB and {}",
                    max.memory_bytes
                ));
            }
            limits.memory_bytes = memory;
        }
        if let Some(retries) = requested.retries {
            if retries > max.retries {
                problems.push(format!("retries {retries} is above {}", max.retries));
            }
            limits.retries = retries;
        }
        if let Some(output) = requested.output_bytes {
            if output > max.output_bytes {
                problems.push(format!(
                    "output_bytes {output} is above {}",
                    max.output_bytes
                ));
            }
            limits.output_bytes = output;
        }
        if problems.is_empty() {
            Ok(limits)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// A job as a client submits it. As JSON, `files` holds inline sources (name -> text); in a
/// multipart upload this is the `spec` part and the files are the upload's file parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Free text for people; never used as a path.
    #[serde(default)]
    pub name: String,
    pub kind: JobKind,
    pub language: Option<String>,
    pub image: Option<String>,
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Text given to the program on standard input.
    pub stdin: Option<String>,
    /// Inline input files, name -> content (JSON submissions).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The program of a `run` job, among its files; the only file when absent.
    pub main: Option<String>,
    #[serde(default)]
    pub limits: RequestedJobLimits,
}

impl JobRequest {
    /// The task this request asks for, given the names of its input files in order.
    pub fn task(&self, inputs: &[String]) -> Result<JobTask, String> {
        let unexpected = |field: &str, present: bool| {
            if present {
                Err(format!("a {} job takes no {field}", self.kind))
            } else {
                Ok(())
            }
        };
        match self.kind {
            JobKind::Md5 => {
                unexpected("language", self.language.is_some())?;
                unexpected("image", self.image.is_some())?;
                unexpected("command", self.command.is_some())?;
                unexpected("args", !self.args.is_empty())?;
                unexpected("stdin", self.stdin.is_some())?;
                unexpected("main", self.main.is_some())?;
                if inputs.len() != 1 {
                    return Err(format!(
                        "an md5 job takes exactly one file, not {}",
                        inputs.len()
                    ));
                }
                Ok(JobTask::Md5)
            }
            JobKind::Run => {
                unexpected("image", self.image.is_some())?;
                unexpected("command", self.command.is_some())?;
                if inputs.is_empty() {
                    return Err("a run job needs at least one source file".to_owned());
                }
                let mut files = inputs.to_vec();
                match &self.main {
                    Some(main) => {
                        let index =
                            files.iter().position(|name| name == main).ok_or_else(|| {
                                format!("the main file {main:?} is not among the job's files")
                            })?;
                        let main = files.remove(index);
                        files.insert(0, main);
                    }
                    None if files.len() > 1 => {
                        return Err(
                            "a run job with several files must name its main file".to_owned()
                        )
                    }
                    None => {}
                }
                // Without a language, the main file's extension tells it.
                let language = match &self.language {
                    Some(language) => language.clone(),
                    None => guess_language(&files[0])
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            format!(
                                "a run job needs a language: none follows from the name {:?}",
                                files[0]
                            )
                        })?,
                };
                Ok(JobTask::Run {
                    language,
                    files,
                    args: self.args.clone(),
                })
            }
            JobKind::Command => {
                unexpected("language", self.language.is_some())?;
                unexpected("args", !self.args.is_empty())?;
                let image = self.image.clone().ok_or("a command job needs an image")?;
                let command = self
                    .command
                    .clone()
                    .filter(|command| !command.trim().is_empty())
                    .ok_or("a command job needs a command line")?;
                Ok(JobTask::Command { image, command })
            }
        }
    }
}

/// Checks an input file name: one plain path component, so it can never name anything
/// outside the job's `inputs/` directory.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a file name is empty".to_owned());
    }
    if name.len() > MAX_FILE_NAME {
        return Err(format!(
            "the file name {name:?} is longer than {MAX_FILE_NAME} bytes"
        ));
    }
    if name.contains('\0') {
        return Err(format!("the file name {name:?} contains a NUL byte"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!("the file name {name:?} contains a path separator"));
    }
    if name == "." || name == ".." || name.contains("..") {
        return Err(format!("the file name {name:?} contains \"..\""));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!("the file name {name:?} starts with '.' or '-'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the file name {name:?} contains a control character"
        ));
    }
    Ok(())
}

/// A job as stored in its directory's `spec.json`: never changes after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub task: JobTask,
    /// Input file names, in the order given; they live in `inputs/`.
    pub inputs: Vec<String>,
    /// Whether `stdin` holds text for the program's standard input.
    pub stdin: bool,
    pub limits: JobLimits,
    pub created_at: DateTime<Utc>,
}

closed_names! {
    /// Which state a job is in, without what the state carries: the `state` of a
    /// [`JobState`], and what `GET /api/jobs?state=` filters by.
    pub enum JobStateKind: "job state" {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
    }
}

/// Where a job is in its life. Final states never change again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running { node: String },
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl JobState {
    pub fn kind(&self) -> JobStateKind {
        match self {
            JobState::Queued => JobStateKind::Queued,
            JobState::Running { .. } => JobStateKind::Running,
            JobState::Succeeded => JobStateKind::Succeeded,
            JobState::Failed => JobStateKind::Failed,
            JobState::TimedOut => JobStateKind::TimedOut,
            JobState::Cancelled => JobStateKind::Cancelled,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running { .. })
    }
}

/// The status of a job's attempt (`status-<attempt>.json`): replaced whole on every change,
/// never edited in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    pub kind: JobKind,
    #[serde(flatten)]
    pub state: JobState,
    /// The attempt this status belongs to, from 1; a requeue after a failure or a dead node
    /// starts the next one.
    pub attempt: u32,
    /// The node that ran the last attempt (`node` is only present while running).
    pub ran_on: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The job was killed for using more memory than its limit.
    pub oom: bool,
    pub peak_memory_bytes: Option<u64>,
    /// stdout or stderr went over the output cap and were cut.
    pub truncated: bool,
    /// Why the job failed or was cancelled, in words.
    pub reason: Option<String>,
    /// The MD5 job's hex digest, also in `outputs/result`.
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobStatus {
    /// The status of a job just created.
    pub fn queued(spec: &JobSpec) -> JobStatus {
        JobStatus {
            id: spec.id.clone(),
            name: spec.name.clone(),
            kind: spec.task.kind(),
            state: JobState::Queued,
            attempt: 1,
            ran_on: None,
            exit_code: None,
            signal: None,
            oom: false,
            peak_memory_bytes: None,
            truncated: false,
            reason: None,
            result: None,
            created_at: spec.created_at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// One page of `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobStatus>,
    /// Pass as `?after=` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// A runner node's heartbeat, `nodes/<node>.json`, rewritten every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: String,
    /// This process's incarnation of the node: leases name it, so a restarted runner with the
    /// same node name does not keep the leases of its earlier life.
    pub boot: String,
    /// Increases with every heartbeat: observers judge staleness by when they last saw it
    /// change on their own clock, so clock skew between nodes does not matter.
    pub sequence: u64,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub slots: usize,
    /// Jobs this node runs now, as `id` and attempt.
    pub running: Vec<RunningJob>,
    pub updated_at: DateTime<Utc>,
    /// Set when the node stops cleanly, so nobody waits for it to go stale.
    #[serde(default)]
    pub stopped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    pub id: String,
    pub attempt: u32,
}

/// A node as `GET /api/nodes` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    #[serde(flatten)]
    pub heartbeat: NodeHeartbeat,
    /// Whether the reporting runner considers this node alive.
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn languages_follow_extensions() {
        assert_eq!(guess_language("main.py"), Some("python"));
        assert_eq!(guess_language("a.b.rs"), Some("rust"));
        assert_eq!(guess_language("script.R"), Some("r"));
        assert_eq!(guess_language("Makefile"), None);
        let run = request(json!({"kind": "run"}));
        assert!(matches!(
            run.task(&["hello.go".to_owned()]),
            Ok(JobTask::Run { language, .. }) if language == "go"
        ));
        let message = run.task(&["Makefile".to_owned()]).unwrap_err();
        assert!(message.contains("needs a language"), "{message}");
    }

    fn request(value: serde_json::Value) -> JobRequest {
        serde_json::from_value(value).expect("a valid request")
    }

    #[test]
    fn requests_become_tasks() {
        let md5 = request(json!({"kind": "md5"}));
        assert_eq!(md5.task(&["a.bin".into()]), Ok(JobTask::Md5));
        let run = request(json!({"kind": "run", "language": "python", "args": ["x y"]}));
        assert_eq!(
            run.task(&["main.py".into()]),
            Ok(JobTask::Run {
                language: "python".into(),
                files: vec!["main.py".into()],
                args: vec!["x y".into()],
            })
        );
        let command =
            request(json!({"kind": "command", "image": "python", "command": "echo 'a b'"}));
        assert_eq!(
            command.task(&[]),
            Ok(JobTask::Command {
                image: "python".into(),
                command: "echo 'a b'".into()
            })
        );
    }

    #[test]
    fn bad_requests_are_explained() {
        let cases = [
            (json!({"kind": "md5"}), vec![], "exactly one file"),
            (
                json!({"kind": "md5", "language": "c"}),
                vec!["a".to_owned()],
                "no language",
            ),
            (
                json!({"kind": "run"}),
                vec!["a".to_owned()],
                "needs a language",
            ),
            (
                json!({"kind": "run", "language": "c"}),
                vec![],
                "at least one",
            ),
            (
                json!({"kind": "command", "image": "c", "command": " "}),
                vec![],
                "command line",
            ),
        ];
        for (value, inputs, expected) in cases {
            let error = request(value.clone()).task(&inputs).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
        assert!(serde_json::from_value::<JobRequest>(json!({"kind": "md5", "nope": 1})).is_err());
        // An unknown kind is refused as the request is read, naming the kinds there are.
        let error = serde_json::from_value::<JobRequest>(json!({"kind": "sha1"}))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("sha1") && error.contains("md5") && error.contains("command"),
            "{error}"
        );
    }

    #[test]
    fn job_kinds_keep_their_names() {
        crate::names::assert_round_trips(JobKind::ALL, &["md5", "run", "command"]);
        let tasks = [
            JobTask::Md5,
            JobTask::Run {
                language: "c".into(),
                files: vec!["a.c".into()],
                args: Vec::new(),
            },
            JobTask::Command {
                image: "c".into(),
                command: "true".into(),
            },
        ];
        for task in tasks {
            let value = serde_json::to_value(&task).unwrap();
            assert_eq!(value["kind"], task.kind().as_str(), "{value}");
        }
    }

    #[test]
    fn job_state_kinds_name_the_states_as_statuses_do() {
        crate::names::assert_round_trips(
            JobStateKind::ALL,
            &[
                "queued",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
            ],
        );
        let states = [
            JobState::Queued,
            JobState::Running { node: "n".into() },
            JobState::Succeeded,
            JobState::Failed,
            JobState::TimedOut,
            JobState::Cancelled,
        ];
        for state in states {
            let value = serde_json::to_value(&state).unwrap();
            assert_eq!(value["state"], state.kind().as_str(), "{value}");
            assert_eq!(state.name(), state.kind().as_str());
        }
    }

    #[test]
    fn an_unknown_state_filter_names_the_valid_states() {
        let error = "finished".parse::<JobStateKind>().unwrap_err();
        assert_eq!(error.value, "finished");
        assert_eq!(error.valid, JobStateKind::NAMES);
        assert_eq!(
            error.to_string(),
            "unknown job state \"finished\": expected one of queued, running, succeeded, \
             failed, timed_out, cancelled"
        );
        // Names are exact, as in JSON.
        assert!("Queued".parse::<JobStateKind>().is_err());
        assert!("timed out".parse::<JobStateKind>().is_err());
    }

    #[test]
    fn file_names_stay_inside_the_job() {
        for good in ["main.py", "a b.txt", "données.csv", "x-1_2.c"] {
            assert_eq!(check_file_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_FILE_NAME + 1);
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\0b",
            ".hidden",
            "a..b",
            "-rf",
            "a\\b",
            "a\nb",
            &long,
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_resolved_against_the_maximum() {
        let defaults = JobLimits {
            timeout_seconds: 60.0,
            cpus: 1.0,
            memory_bytes: 512 << 20,
            retries: 0,
            output_bytes: 1 << 20,
        };
        let max = JobLimits {
            timeout_seconds: 3600.0,
            cpus: 2.0,
            memory_bytes: 1 << 30,
            retries: 5,
            output_bytes: 64 << 20,
        };
        let asked = RequestedJobLimits {
            timeout_seconds: Some(2.0),
            retries: Some(3),
            ..Default::default()
        };
        let resolved = defaults.resolve(&asked, &max).unwrap();
        assert_eq!(resolved.timeout_seconds, 2.0);
        assert_eq!(resolved.retries, 3);
        assert_eq!(resolved.memory_bytes, 512 << 20);
        let too_much = RequestedJobLimits {
            cpus: Some(4.0),
            memory_bytes: Some(2 << 30),
            timeout_seconds: Some(0.0),
            ..Default::default()
        };
        let error = defaults.resolve(&too_much, &max).unwrap_err();
        assert!(
            error.contains("cpus") && error.contains("memory_bytes") && error.contains("timeout")
        );
    }

    #[test]
    fn status_serializes_flat_with_its_state() {
        let spec = JobSpec {
            id: "j1".into(),
            name: "my job ✓".into(),
            task: JobTask::Md5,
            inputs: vec!["f".into()],
            stdin: false,
            limits: JobLimits {
                timeout_seconds: 1.0,
                cpus: 1.0,
                memory_bytes: 1,
                retries: 0,
                output_bytes: 1,
            },
            created_at: Utc::now(),
        };
        let mut status = JobStatus::queued(&spec);
        status.state = JobState::Running { node: "n1".into() };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["state"], "running");
        assert_eq!(value["node"], "n1");
        assert_eq!(value["kind"], "md5");
        let back: JobStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
        let spec_json = serde_json::to_value(&spec).unwrap();
        assert_eq!(spec_json["kind"], "md5");
        assert_eq!(serde_json::from_value::<JobSpec>(spec_json).unwrap(), spec);
        assert!(JobState::TimedOut.is_final() && !JobState::Queued.is_final());
    }
}
