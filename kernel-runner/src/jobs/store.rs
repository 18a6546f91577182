//! The job store: jobs as directories on a volume every runner mounts (local disk, or
//! GlusterFS on a swarm), with claims, leases and publication that are safe there.
//!
//! Layout under the volume root:
//! ```text
//! jobs/<id>/spec.json          written once, before the job becomes visible
//! jobs/<id>/inputs/<name>      uploaded files
//! jobs/<id>/stdin              standard input, when given
//! jobs/<id>/status-<attempt>.json   the attempt's status, replaced whole (write, fsync,
//!                              rename); the highest attempt's file is the job's status
//! jobs/<id>/claim-<attempt>    created with O_CREAT|O_EXCL by the one runner that runs it
//! jobs/<id>/fence-<attempt>    created with O_EXCL by whoever ends an attempt's lease early
//! jobs/<id>/cancel             asks the runner holding the job to kill it
//! jobs/<id>/outputs/<attempt>/{stdout,stderr,result}   each attempt writes its own
//! jobs/.new-<uuid>/            a job being created; renamed to jobs/<id> when complete
//! queue/<id>.<attempt>         one entry per unfinished job: the cheap scan reads only this
//! nodes/<node>.json            runner heartbeats
//! ```
//! Every rule here comes from what GlusterFS guarantees across mounts: exclusive creation has
//! exactly one winner, a rename is atomic for readers in the same directory, but two renames
//! to the same name can both succeed, and fcntl locks are not to be trusted. So a claim or a
//! fence is an `O_EXCL` file, a status is published by renaming a file whose name is unique
//! to its writer, and the attempt number is the fencing token: a runner publishes an
//! attempt's result only while nobody has fenced that attempt off. Each attempt has its own
//! status file, so a runner that stalled in the middle of a publication (a frozen node) and
//! completes its rename later writes only over its own, superseded attempt: readers take the
//! highest attempt, and a stale write can never bring a finished job back to `running`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use cellgate_protocol::job::{
    check_file_name, JobSpec, JobState, JobStatus, NodeHeartbeat, OUTPUT_FILES,
};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use super::error::JobError;

/// A runner's hold on one attempt of a job: the content of `claim-<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: String,
    /// The holder's process incarnation: a restarted runner keeps its node name but not
    /// the leases of its earlier life.
    pub boot: String,
    /// The fencing token: results are published for this attempt only.
    pub attempt: u32,
    pub claimed_at: DateTime<Utc>,
}

/// The holder name of a claim taken to cancel a queued job, so that no runner starts it.
pub const CANCEL_HOLDER: &str = "(cancelled)";

/// How a cancel request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job had not started: it is cancelled now.
    Cancelled(JobStatus),
    /// The job is running: its runner has been asked to kill it.
    Killing(JobStatus),
}

/// A job being created: its files go into a private directory that becomes the job only when
/// everything is written.
#[derive(Debug)]
pub struct Staged {
    pub id: String,
    dir: PathBuf,
    inputs: Vec<String>,
    stdin: bool,
}

impl Staged {
    /// Creates the input file `name` (checked, never an existing path or a symlink) and
    /// records it in order.
    pub fn create_input(&mut self, name: &str) -> Result<(PathBuf, File), JobError> {
        check_file_name(name).map_err(JobError::BadRequest)?;
        if self.inputs.iter().any(|known| known == name) {
            return Err(JobError::BadRequest(format!(
                "the file name {name:?} is given twice"
            )));
        }
        let path = self.dir.join("inputs").join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(JobError::volume(&path))?;
        self.inputs.push(name.to_owned());
        Ok((path, file))
    }

    /// Creates the standard-input file.
    pub fn create_stdin(&mut self) -> Result<(PathBuf, File), JobError> {
        if self.stdin {
            return Err(JobError::BadRequest("stdin is given twice".to_owned()));
        }
        let path = self.dir.join("stdin");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(JobError::volume(&path))?;
        self.stdin = true;
        Ok((path, file))
    }

    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    pub fn has_stdin(&self) -> bool {
        self.stdin
    }
}

pub struct JobStore {
    root: PathBuf,
    jobs: PathBuf,
    queue: PathBuf,
    nodes: PathBuf,
    /// Every status this process publishes, for event streams.
    events: broadcast::Sender<JobStatus>,
    /// Woken when this process queues a job, so local workers need not wait for a scan.
    queued: Notify,
    /// Ids of running jobs someone in this process asked to cancel.
    cancels: broadcast::Sender<String>,
    /// Final statuses already read: a finished job's status never changes, so listing reads
    /// only the unfinished jobs' files (on GlusterFS each read costs milliseconds).
    finished: DashMap<String, JobStatus>,
}

/// Stores by volume root, so runners in one process share events and wake-ups.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<JobStore>>> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Weak<JobStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl JobStore {
    /// The store on `root`, created if missing; one shared instance per root in a process.
    pub fn open(root: &Path) -> Result<Arc<JobStore>, JobError> {
        for dir in ["jobs", "queue", "nodes"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(JobError::volume(&path))?;
        }
        let root = root.canonicalize().map_err(JobError::volume(root))?;
        let mut stores = registry()
            .lock()
            .expect("the store registry is never poisoned");
        if let Some(store) = stores.get(&root).and_then(Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(JobStore {
            jobs: root.join("jobs"),
            queue: root.join("queue"),
            nodes: root.join("nodes"),
            root: root.clone(),
            events: broadcast::channel(4096).0,
            queued: Notify::new(),
            cancels: broadcast::channel(256).0,
            finished: DashMap::new(),
        });
        stores.retain(|_, store| store.strong_count() > 0);
        stores.insert(root, Arc::downgrade(&store));
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobStatus> {
        self.events.subscribe()
    }

    pub fn subscribe_cancels(&self) -> broadcast::Receiver<String> {
        self.cancels.subscribe()
    }

    pub fn queued(&self) -> &Notify {
        &self.queued
    }

    /// A job's directory; the id must be a UUID, so no request can name another path.
    pub fn job_dir(&self, id: &str) -> Result<PathBuf, JobError> {
        match uuid::Uuid::parse_str(id) {
            Ok(uuid) if uuid.hyphenated().to_string() == id => Ok(self.jobs.join(id)),
            _ => Err(JobError::NotFound(id.to_owned())),
        }
    }

    /// Starts creating a job in a private directory beside the jobs.
    pub fn stage(&self) -> Result<Staged, JobError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let dir = self.jobs.join(format!(".new-{id}"));
        let inputs = dir.join("inputs");
        // One mkdir each, parents first: on GlusterFS every call costs milliseconds, and
        // `create_dir_all` tries the deepest directory first. `outputs` is made here, where
        // the job is still private, so a worker makes only its attempt's directory.
        for new in [&dir, &inputs, &dir.join("outputs")] {
            fs::create_dir(new).map_err(JobError::volume(new))?;
        }
        Ok(Staged {
            id,
            dir,
            inputs: Vec::new(),
            stdin: false,
        })
    }

    /// Removes a staged job that will not be committed.
    pub fn discard(&self, staged: Staged) {
        if let Err(error) = fs::remove_dir_all(&staged.dir) {
            tracing::warn!(dir = %staged.dir.display(), %error, "could not remove a staged job");
        }
    }

    /// Makes a staged job visible and queued: its spec and first status are written into the
    /// private directory, which is then renamed into place, so a reader sees either no job or
    /// a complete one. The queue entry comes last; a crash before it leaves a job a slow
    /// sweep can find, never a queue entry without a job.
    pub fn commit(&self, staged: Staged, spec: &JobSpec) -> Result<JobStatus, JobError> {
        let result = (|| {
            write_new(&staged.dir.join("spec.json"), &to_json(spec))?;
            let status = JobStatus::queued(spec);
            write_new(
                &staged.dir.join(status_file(status.attempt)),
                &to_json(&status),
            )?;
            let target = self.jobs.join(&staged.id);
            fs::rename(&staged.dir, &target).map_err(JobError::volume(&target))?;
            Ok(status)
        })();
        let status = match result {
            Ok(status) => status,
            Err(error) => {
                self.discard(staged);
                return Err(error);
            }
        };
        self.enqueue(&status.id, status.attempt)?;
        let _ = self.events.send(status.clone());
        self.queued.notify_waiters();
        Ok(status)
    }

    /// The job's status: that of its latest attempt.
    pub fn status(&self, id: &str) -> Result<JobStatus, JobError> {
        let dir = self.job_dir(id)?;
        let entries = fs::read_dir(&dir)
            .map_err(JobError::volume(&dir))
            .map_err(|error| not_found_as(error, id))?;
        let mut latest = None;
        for entry in entries {
            let entry = entry.map_err(JobError::volume(&dir))?;
            let name = entry.file_name();
            let attempt = name
                .to_str()
                .and_then(|name| name.strip_prefix("status-"))
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|attempt| attempt.parse::<u32>().ok());
            if attempt > latest {
                latest = attempt;
            }
        }
        // Jobs written before statuses were kept per attempt have a single `status.json`.
        let name = latest.map_or_else(|| "status.json".to_owned(), status_file);
        read_json(&dir.join(name)).map_err(|error| not_found_as(error, id))
    }

    pub fn spec(&self, id: &str) -> Result<JobSpec, JobError> {
        let path = self.job_dir(id)?.join("spec.json");
        read_json(&path).map_err(|error| not_found_as(error, id))
    }

    /// Every job's status, oldest first. This reads the jobs directory and the status of each
    /// job not known to be finished: it is for the API, not for the workers' scan.
    pub fn list(&self) -> Result<Vec<JobStatus>, JobError> {
        let mut jobs = Vec::new();
        let mut present = HashSet::new();
        for entry in fs::read_dir(&self.jobs).map_err(JobError::volume(&self.jobs))? {
            let entry = entry.map_err(JobError::volume(&self.jobs))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            present.insert(name.to_owned());
            if let Some(status) = self.finished.get(name) {
                jobs.push(status.clone());
                continue;
            }
            match self.status(name) {
                Ok(status) => {
                    if status.state.is_final() {
                        self.finished.insert(name.to_owned(), status.clone());
                    }
                    jobs.push(status);
                }
                // A job deleted while we listed is simply gone.
                Err(JobError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        // Jobs deleted through other runners leave the cache too.
        self.finished.retain(|id, _| present.contains(id));
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(jobs)
    }

    /// Replaces the status of the job's attempt `status.attempt`: written under a name unique
    /// to this writer, flushed, then renamed over `status-<attempt>.json` in the same
    /// directory. Publishing for an attempt that a later one has superseded changes nothing
    /// readers see.
    pub fn publish(&self, status: &JobStatus) -> Result<(), JobError> {
        let dir = self.job_dir(&status.id)?;
        replace(&dir, &status_file(status.attempt), &to_json(status))?;
        let _ = self.events.send(status.clone());
        Ok(())
    }

    /// The unfinished jobs as `(id, attempt)`: one directory read, whatever the job count.
    pub fn queue(&self) -> Result<Vec<(String, u32)>, JobError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.queue).map_err(JobError::volume(&self.queue))? {
            let entry = entry.map_err(JobError::volume(&self.queue))?;
            let name = entry.file_name();
            let Some((id, attempt)) = name.to_str().and_then(|name| name.rsplit_once('.')) else {
                continue;
            };
            if let Ok(attempt) = attempt.parse() {
                entries.push((id.to_owned(), attempt));
            }
        }
        Ok(entries)
    }

    pub fn enqueue(&self, id: &str, attempt: u32) -> Result<(), JobError> {
        let path = self.queue.join(format!("{id}.{attempt}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(JobError::volume(path)(error)),
        }
    }

    pub fn dequeue(&self, id: &str, attempt: u32) -> Result<(), JobError> {
        let path = self.queue.join(format!("{id}.{attempt}"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(JobError::volume(path)(error)),
        }
    }

    /// Tries to take `attempt` of a job: exactly one caller on any mount wins.
    pub fn claim(&self, id: &str, lease: &Lease) -> Result<bool, JobError> {
        let path = self.job_dir(id)?.join(format!("claim-{}", lease.attempt));
        create_exclusive(&path, &to_json(lease))
    }

    /// Who holds `attempt` of a job; `None` when nobody has claimed it, or the claim is so
    /// fresh that its content is not visible yet.
    pub fn lease(&self, id: &str, attempt: u32) -> Result<Option<Lease>, JobError> {
        let path = self.job_dir(id)?.join(format!("claim-{attempt}"));
        match fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(JobError::volume(path)(error)),
        }
    }

    /// Ends `attempt`'s lease for good; only one caller wins, and that caller decides what
    /// happens to the job next. The holder checks [`JobStore::is_fenced`] before publishing.
    pub fn fence(&self, id: &str, attempt: u32) -> Result<bool, JobError> {
        let path = self.job_dir(id)?.join(format!("fence-{attempt}"));
        create_exclusive(&path, b"")
    }

    pub fn is_fenced(&self, id: &str, attempt: u32) -> Result<bool, JobError> {
        let path = self.job_dir(id)?.join(format!("fence-{attempt}"));
        exists(&path)
    }

    /// Puts a job whose attempt ended without a result (a dead node, or a failure with
    /// retries left) back in the queue as the next attempt. The caller has won the fence.
    pub fn requeue(&self, mut status: JobStatus, reason: String) -> Result<JobStatus, JobError> {
        let previous = status.attempt;
        status.attempt += 1;
        status.state = JobState::Queued;
        status.reason = Some(reason);
        self.publish(&status)?;
        self.enqueue(&status.id, status.attempt)?;
        self.dequeue(&status.id, previous)?;
        self.queued.notify_waiters();
        Ok(status)
    }

    /// Publishes a final status and takes the job off the queue.
    pub fn finish(&self, status: &JobStatus) -> Result<(), JobError> {
        self.publish(status)?;
        self.dequeue(&status.id, status.attempt)
    }

    /// Cancels a queued job, or asks the runner of a running one to kill it.
    pub fn cancel(&self, id: &str, node: &str) -> Result<CancelOutcome, JobError> {
        let mut status = self.status(id)?;
        if status.state.is_final() {
            return Err(JobError::AlreadyFinal {
                id: id.to_owned(),
                state: status.state.name(),
            });
        }
        let lease = Lease {
            node: CANCEL_HOLDER.to_owned(),
            boot: node.to_owned(),
            attempt: status.attempt,
            claimed_at: Utc::now(),
        };
        if self.claim(id, &lease)? {
            status.state = JobState::Cancelled;
            status.reason = Some("cancelled before it started".to_owned());
            status.finished_at = Some(Utc::now());
            self.finish(&status)?;
            return Ok(CancelOutcome::Cancelled(status));
        }
        let marker = self.job_dir(id)?.join("cancel");
        create_exclusive(&marker, b"")?;
        let _ = self.cancels.send(id.to_owned());
        Ok(CancelOutcome::Killing(self.status(id)?))
    }

    pub fn cancel_requested(&self, id: &str) -> Result<bool, JobError> {
        exists(&self.job_dir(id)?.join("cancel"))
    }

    /// Removes a job that is not running: a queued one is cancelled first, so no runner
    /// starts it while it disappears.
    pub fn delete(&self, id: &str, node: &str) -> Result<(), JobError> {
        let status = self.status(id)?;
        if !status.state.is_final() {
            match self.cancel(id, node)? {
                CancelOutcome::Cancelled(_) => {}
                CancelOutcome::Killing(_) => {
                    return Err(JobError::StillRunning { id: id.to_owned() })
                }
            }
        }
        let dir = self.job_dir(id)?;
        // Renaming first makes the job vanish at once for every reader; the files go after.
        let doomed = self.jobs.join(format!(".deleted-{}", uuid::Uuid::new_v4()));
        fs::rename(&dir, &doomed).map_err(JobError::volume(&dir))?;
        self.finished.remove(id);
        fs::remove_dir_all(&doomed).map_err(JobError::volume(&doomed))
    }

    /// The directory where one attempt of a job writes its outputs.
    pub fn outputs_dir(&self, id: &str, attempt: u32) -> Result<PathBuf, JobError> {
        Ok(self.job_dir(id)?.join("outputs").join(attempt.to_string()))
    }

    /// The path of an output file of the job's current attempt (the one whose result its
    /// status shows); only the fixed output names are served.
    pub fn output_path(&self, id: &str, name: &str) -> Result<PathBuf, JobError> {
        if !OUTPUT_FILES.contains(&name) {
            return Err(JobError::NoSuchOutput {
                id: id.to_owned(),
                name: name.to_owned(),
            });
        }
        let attempt = self.status(id)?.attempt;
        Ok(self.outputs_dir(id, attempt)?.join(name))
    }

    /// Publishes this node's heartbeat.
    pub fn write_heartbeat(&self, heartbeat: &NodeHeartbeat) -> Result<(), JobError> {
        let name = format!("{}.json", sanitize_node(&heartbeat.node));
        replace(&self.nodes, &name, &to_json(heartbeat))
    }

    /// Every node's latest heartbeat.
    pub fn heartbeats(&self) -> Result<Vec<NodeHeartbeat>, JobError> {
        let mut nodes = Vec::new();
        for entry in fs::read_dir(&self.nodes).map_err(JobError::volume(&self.nodes))? {
            let entry = entry.map_err(JobError::volume(&self.nodes))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|name| name.ends_with(".json")) {
                // A heartbeat being replaced or half visible is skipped until the next read.
                if let Ok(heartbeat) = read_json::<NodeHeartbeat>(&entry.path()) {
                    nodes.push(heartbeat);
                }
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }
}

/// Node names come from configuration; anything but a plain name is replaced so a heartbeat
/// file always lands in `nodes/`.
fn sanitize_node(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

fn status_file(attempt: u32) -> String {
    format!("status-{attempt}.json")
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("job types always serialize")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, JobError> {
    let bytes = fs::read(path).map_err(JobError::volume(path))?;
    serde_json::from_slice(&bytes).map_err(|source| JobError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

fn not_found_as(error: JobError, id: &str) -> JobError {
    match error {
        JobError::Volume { source, .. } if source.kind() == ErrorKind::NotFound => {
            JobError::NotFound(id.to_owned())
        }
        other => other,
    }
}

fn exists(path: &Path) -> Result<bool, JobError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
        Err(error) => Err(JobError::volume(path)(error)),
    }
}

/// Creates `path` with `O_CREAT|O_EXCL`; false when it already exists.
fn create_exclusive(path: &Path, content: &[u8]) -> Result<bool, JobError> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            if !content.is_empty() {
                file.write_all(content).map_err(JobError::volume(path))?;
            }
            Ok(true)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(JobError::volume(path)(error)),
    }
}

/// Writes a new file and flushes it to the volume.
fn write_new(path: &Path, content: &[u8]) -> Result<(), JobError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(JobError::volume(path))?;
    file.write_all(content).map_err(JobError::volume(path))?;
    file.sync_data().map_err(JobError::volume(path))
}

/// Replaces `dir/name` atomically: the new content goes to a name no other writer uses, is
/// flushed, and is renamed over the old file within the same directory.
fn replace(dir: &Path, name: &str, content: &[u8]) -> Result<(), JobError> {
    let temporary = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let result = write_new(&temporary, content).and_then(|()| {
        let target = dir.join(name);
        fs::rename(&temporary, &target).map_err(JobError::volume(target))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::job::{JobLimits, JobTask};

    pub(crate) fn limits() -> JobLimits {
        JobLimits {
            timeout_seconds: 10.0,
            cpus: 1.0,
            memory_bytes: 64 << 20,
            retries: 0,
            output_bytes: 1 << 20,
        }
    }

    fn create_md5(store: &JobStore, content: &[u8]) -> JobStatus {
        let mut staged = store.stage().unwrap();
        let (_, mut file) = staged.create_input("data.bin").unwrap();
        file.write_all(content).unwrap();
        let spec = JobSpec {
            id: staged.id.clone(),
            name: "a job ✓ with spaces".into(),
            task: JobTask::Md5,
            inputs: staged.inputs().to_vec(),
            stdin: false,
            limits: limits(),
            created_at: Utc::now(),
        };
        store.commit(staged, &spec).unwrap()
    }

    fn lease(node: &str, attempt: u32) -> Lease {
        Lease {
            node: node.into(),
            boot: "b".into(),
            attempt,
            claimed_at: Utc::now(),
        }
    }

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("cellgate-store-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn a_committed_job_is_queued_and_listed() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let status = create_md5(&store, b"abc");
        assert_eq!(status.state, JobState::Queued);
        assert_eq!(store.queue().unwrap(), vec![(status.id.clone(), 1)]);
        assert_eq!(store.status(&status.id).unwrap(), status);
        assert_eq!(store.spec(&status.id).unwrap().inputs, vec!["data.bin"]);
        assert_eq!(store.list().unwrap(), vec![status]);
        assert!(
            fs::read_dir(root.join("jobs")).unwrap().all(|entry| !entry
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with(".new")),
            "no staging directory is left"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn exactly_one_claim_wins_and_fences_stop_publication() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let id = create_md5(&store, b"").id;
        assert!(store.claim(&id, &lease("a", 1)).unwrap());
        assert!(!store.claim(&id, &lease("b", 1)).unwrap());
        assert_eq!(store.lease(&id, 1).unwrap().unwrap().node, "a");
        assert!(!store.is_fenced(&id, 1).unwrap());
        assert!(store.fence(&id, 1).unwrap());
        assert!(!store.fence(&id, 1).unwrap(), "only one fencer wins");
        assert!(store.is_fenced(&id, 1).unwrap());
        let status = store
            .requeue(store.status(&id).unwrap(), "node died".into())
            .unwrap();
        assert_eq!(status.attempt, 2);
        assert_eq!(store.queue().unwrap(), vec![(id.clone(), 2)]);
        assert!(store.claim(&id, &lease("b", 2)).unwrap());
        // The fenced attempt's late writes land in its own directory, never in what is served.
        for attempt in [1, 2] {
            let outputs = store.outputs_dir(&id, attempt).unwrap();
            fs::create_dir_all(&outputs).unwrap();
            fs::write(outputs.join("stdout"), format!("attempt {attempt}")).unwrap();
        }
        let served = store.output_path(&id, "stdout").unwrap();
        assert_eq!(fs::read_to_string(served).unwrap(), "attempt 2");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_superseded_attempt_never_overwrites_the_status() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let id = create_md5(&store, b"").id;
        assert!(store.claim(&id, &lease("frozen", 1)).unwrap());
        // The holder of attempt 1 read the status and stalled before publishing `running`.
        let mut stale = store.status(&id).unwrap();
        assert!(store.fence(&id, 1).unwrap());
        let requeued = store.requeue(stale.clone(), "node froze".into()).unwrap();
        assert!(store.claim(&id, &lease("b", 2)).unwrap());
        let mut done = requeued;
        done.state = JobState::Succeeded;
        store.finish(&done).unwrap();
        // It thaws and completes its publication.
        stale.state = JobState::Running {
            node: "frozen".into(),
        };
        store.publish(&stale).unwrap();
        assert_eq!(store.status(&id).unwrap(), done);
        assert_eq!(store.list().unwrap(), vec![done]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_job_with_a_single_status_file_is_still_read() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let status = create_md5(&store, b"");
        let dir = store.job_dir(&status.id).unwrap();
        fs::rename(dir.join(status_file(1)), dir.join("status.json")).unwrap();
        assert_eq!(store.status(&status.id).unwrap(), status);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn listing_follows_finishes_and_deletions_by_other_runners() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let done = create_md5(&store, b"a");
        let waiting = create_md5(&store, b"b");
        let mut status = store.status(&done.id).unwrap();
        status.state = JobState::Succeeded;
        store.finish(&status).unwrap();
        let states = |store: &JobStore| -> Vec<(String, &'static str)> {
            let listed = store.list().unwrap();
            listed
                .iter()
                .map(|job| (job.id.clone(), job.state.name()))
                .collect()
        };
        assert_eq!(
            states(&store),
            [
                (done.id.clone(), "succeeded"),
                (waiting.id.clone(), "queued")
            ]
        );
        // Another runner deletes the finished job and finishes the other one.
        fs::remove_dir_all(store.job_dir(&done.id).unwrap()).unwrap();
        let mut status = store.status(&waiting.id).unwrap();
        status.state = JobState::Failed;
        replace(
            &store.job_dir(&waiting.id).unwrap(),
            &status_file(status.attempt),
            &to_json(&status),
        )
        .unwrap();
        assert_eq!(states(&store), [(waiting.id.clone(), "failed")]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cancel_takes_a_queued_job_and_refuses_a_finished_one() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        let id = create_md5(&store, b"x").id;
        match store.cancel(&id, "n").unwrap() {
            CancelOutcome::Cancelled(status) => assert_eq!(status.state, JobState::Cancelled),
            other => panic!("{other:?}"),
        }
        assert!(store.queue().unwrap().is_empty());
        assert!(!store.claim(&id, &lease("a", 1)).unwrap(), "nobody runs it");
        assert!(matches!(
            store.cancel(&id, "n"),
            Err(JobError::AlreadyFinal { .. })
        ));
        store.delete(&id, "n").unwrap();
        assert!(matches!(store.status(&id), Err(JobError::NotFound(_))));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn ids_and_names_never_become_paths() {
        let root = temp_root();
        let store = JobStore::open(&root).unwrap();
        for id in [
            "..",
            "../x",
            "a/b",
            "",
            "00000000-0000-0000-0000-00000000000G",
        ] {
            assert!(
                matches!(store.status(id), Err(JobError::NotFound(_))),
                "{id}"
            );
        }
        let mut staged = store.stage().unwrap();
        for name in ["../x", "/etc/passwd", "a\0b", ".."] {
            assert!(staged.create_input(name).is_err(), "{name:?}");
        }
        staged.create_input("ok").unwrap();
        assert!(staged.create_input("ok").is_err(), "duplicates are refused");
        store.discard(staged);
        let id = create_md5(&store, b"").id;
        assert!(store.output_path(&id, "../spec.json").is_err());
        assert!(store.output_path(&id, "stdout").is_ok());
        assert_eq!(sanitize_node("../../etc"), "_.._etc");
        fs::remove_dir_all(root).unwrap();
    }
}
