//! The batch worker: job slots, the scan for queued jobs, claims, running an attempt,
//! retries, heartbeats, and requeueing the jobs of nodes that stopped responding.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellgate_protocol::job::{JobSpec, JobState, JobTask, NodeHeartbeat, RunningJob};
use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::JobError;
use super::execute::{Execution, Executor, Program};
use super::md5::{md5_file, Md5Error};
use super::nodes::{memory, CpuMeter, Liveness};
use super::outcome::{outcome, Outcome};
use super::store::{JobStore, Lease, CANCEL_HOLDER};

/// How a worker behaves; the defaults suit a swarm, tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub node: String,
    pub slots: usize,
    /// The scan that finds jobs other processes queued.
    pub scan_interval: Duration,
    pub heartbeat_interval: Duration,
    /// A node whose heartbeat has not changed for this long has lost its leases.
    pub stale_after: Duration,
    /// How long running jobs get to end when the runner stops, before they are requeued.
    pub drain: Duration,
}

impl WorkerSettings {
    pub fn new(node: String) -> WorkerSettings {
        WorkerSettings {
            node,
            slots: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            scan_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            stale_after: Duration::from_secs(15),
            drain: Duration::from_secs(10),
        }
    }
}

/// A job running here: its attempt and how to stop it.
struct Local {
    attempt: u32,
    stop: CancellationToken,
    /// Set when the stop is a user's cancel rather than the runner shutting down.
    cancelled: Arc<AtomicBool>,
}

pub struct Worker {
    store: Arc<JobStore>,
    executor: Arc<dyn Executor>,
    settings: WorkerSettings,
    boot: String,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, Local>>,
    /// Queue entries another runner holds, with its lease once read.
    elsewhere: Mutex<HashMap<(String, u32), Option<Lease>>>,
    /// When this node last published its heartbeat: past `stale_after`, others may have taken
    /// its jobs, so it publishes no result.
    last_heartbeat: Mutex<Instant>,
    tasks: TaskTracker,
}

impl Worker {
    pub fn new(
        store: Arc<JobStore>,
        executor: Arc<dyn Executor>,
        settings: WorkerSettings,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            store,
            executor,
            slots: Arc::new(Semaphore::new(settings.slots.max(1))),
            settings,
            boot: uuid::Uuid::new_v4().simple().to_string(),
            running: Mutex::new(HashMap::new()),
            elsewhere: Mutex::new(HashMap::new()),
            last_heartbeat: Mutex::new(Instant::now()),
            tasks: TaskTracker::new(),
        })
    }

    pub fn store(&self) -> &Arc<JobStore> {
        &self.store
    }

    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// Runs until `shutdown` is cancelled; then running jobs get the drain period to end, and
    /// those still running are stopped and requeued for another runner.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if let Err(error) = self.heartbeat(false).await {
            tracing::warn!(%error, "cannot publish the first heartbeat");
        }
        let heartbeats = self
            .tasks
            .spawn(self.clone().heartbeat_loop(shutdown.clone()));
        self.tasks
            .spawn(self.clone().cancel_listener(shutdown.clone()));
        loop {
            let queued = self.store.queued().notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            if let Err(error) = self.clone().scan().await {
                tracing::warn!(%error, "the job scan failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut queued => {}
                _ = tokio::time::sleep(self.settings.scan_interval) => {}
            }
        }
        let _ = heartbeats.await;
        self.tasks.close();
        if tokio::time::timeout(self.settings.drain, self.tasks.wait())
            .await
            .is_err()
        {
            let stops: Vec<CancellationToken> = self
                .running
                .lock()
                .expect("never poisoned")
                .values()
                .map(|local| local.stop.clone())
                .collect();
            for stop in stops {
                stop.cancel();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        }
        if let Err(error) = self.heartbeat(true).await {
            tracing::warn!(%error, "cannot publish the last heartbeat");
        }
    }

    /// Reads the queue and claims what free slots allow, in one blocking task.
    async fn scan(self: Arc<Self>) -> Result<(), JobError> {
        let free = self.slots.available_permits();
        let busy: HashSet<String> = self
            .running
            .lock()
            .expect("never poisoned")
            .keys()
            .cloned()
            .collect();
        let known: HashSet<(String, u32)> = self
            .elsewhere
            .lock()
            .expect("never poisoned")
            .keys()
            .cloned()
            .collect();
        let worker = self.clone();
        let (claimed, taken, queue) = tokio::task::spawn_blocking(move || {
            let queue = worker.store.queue()?;
            let mut claimed = Vec::new();
            let mut taken = Vec::new();
            for (id, attempt) in &queue {
                if claimed.len() >= free {
                    break;
                }
                let key = (id.clone(), *attempt);
                if busy.contains(id) || known.contains(&key) {
                    continue;
                }
                let lease = worker.lease(*attempt);
                match worker.store.claim(id, &lease) {
                    Ok(true) => claimed.push(key),
                    Ok(false) => taken.push(key),
                    Err(JobError::NotFound(_)) => {}
                    Err(JobError::Volume { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        // The job was deleted under its queue entry.
                        worker.store.dequeue(id, *attempt)?;
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok::<_, JobError>((claimed, taken, queue))
        })
        .await
        .map_err(JobError::Blocking)??;
        {
            let queued: HashSet<&(String, u32)> = queue.iter().collect();
            let mut elsewhere = self.elsewhere.lock().expect("never poisoned");
            elsewhere.retain(|key, _| queued.contains(key));
            for key in taken {
                elsewhere.entry(key).or_insert(None);
            }
        }
        for (id, attempt) in claimed {
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Cannot happen while only the scan takes slots; give the claim back.
                    tracing::error!(%id, "claimed a job without a free slot");
                    continue;
                }
            };
            let stop = CancellationToken::new();
            let cancelled = Arc::new(AtomicBool::new(false));
            self.running.lock().expect("never poisoned").insert(
                id.clone(),
                Local {
                    attempt,
                    stop: stop.clone(),
                    cancelled: cancelled.clone(),
                },
            );
            let worker = self.clone();
            self.tasks.spawn(async move {
                worker
                    .clone()
                    .attempt(id.clone(), attempt, stop, cancelled, permit)
                    .await;
                worker.running.lock().expect("never poisoned").remove(&id);
                // A finished slot may let this node take a job waiting in the queue.
                worker.store.queued().notify_waiters();
            });
        }
        Ok(())
    }

    fn lease(&self, attempt: u32) -> Lease {
        Lease {
            node: self.settings.node.clone(),
            boot: self.boot.clone(),
            attempt,
            claimed_at: Utc::now(),
        }
    }

    /// Runs one claimed attempt and publishes its outcome.
    async fn attempt(
        self: Arc<Self>,
        id: String,
        attempt: u32,
        stop: CancellationToken,
        cancelled: Arc<AtomicBool>,
        _permit: OwnedSemaphorePermit,
    ) {
        if let Err(error) = self.try_attempt(&id, attempt, &stop, &cancelled).await {
            tracing::error!(%id, attempt, %error, "a job attempt failed in the runner");
        }
    }

    async fn try_attempt(
        &self,
        id: &str,
        attempt: u32,
        stop: &CancellationToken,
        cancelled: &AtomicBool,
    ) -> Result<(), JobError> {
        let store = self.store.clone();
        let job = id.to_owned();
        let node = self.settings.node.clone();
        // Reading the spec and status and publishing `running` is one blocking task: on
        // GlusterFS each of these operations costs milliseconds.
        let prepared = tokio::task::spawn_blocking(move || {
            let spec = store.spec(&job)?;
            let mut status = store.status(&job)?;
            if status.state.is_final() || status.attempt != attempt {
                if status.state.is_final() {
                    store.dequeue(&job, attempt)?;
                }
                return Ok(None);
            }
            let cancel_requested = store.cancel_requested(&job)?;
            status.state = JobState::Running { node: node.clone() };
            status.ran_on = Some(node);
            status.started_at = Some(Utc::now());
            let outputs = store.outputs_dir(&job, attempt)?;
            // Jobs are staged with their `outputs` directory, so one mkdir is enough; jobs
            // staged before that was so get the whole path.
            if let Err(error) = std::fs::create_dir(&outputs) {
                if error.kind() != std::io::ErrorKind::AlreadyExists {
                    std::fs::create_dir_all(&outputs).map_err(JobError::volume(&outputs))?;
                }
            }
            store.publish(&status)?;
            // A node that stalled since reading the status may have lost the attempt: what it
            // published went to a superseded attempt, and it must not run the job as well.
            if store.is_fenced(&job, attempt)? {
                tracing::warn!(id = %job, attempt, "the attempt was fenced off before it started");
                return Ok(None);
            }
            Ok::<_, JobError>(Some((spec, status, cancel_requested)))
        })
        .await
        .map_err(JobError::Blocking)??;
        let Some((spec, mut status, cancel_requested)) = prepared else {
            return Ok(());
        };
        if cancel_requested {
            cancelled.store(true, Ordering::SeqCst);
            stop.cancel();
        }
        let watcher = self.watch_cancel_marker(id, stop.clone(), cancelled);
        let execution = tokio::select! {
            execution = self.execute(&spec, attempt, stop.clone()) => execution,
            () = watcher => unreachable!("the watcher never ends on its own"),
        };
        status.exit_code = execution.exit_code;
        status.signal = execution.signal;
        status.oom = execution.oom;
        status.truncated = execution.truncated;
        status.peak_memory_bytes = execution.peak_memory_bytes;
        status.finished_at = Some(Utc::now());
        let user_cancel = cancelled.load(Ordering::SeqCst);
        let Outcome {
            state,
            reason,
            requeue,
            result,
        } = outcome(&spec, attempt, &self.settings.node, &execution, user_cancel);
        status.reason = reason.clone();
        status.state = state;
        if let Some(result) = result {
            status.result = Some(result);
        }
        let heartbeat_fresh = self
            .last_heartbeat
            .lock()
            .expect("never poisoned")
            .elapsed()
            < self.settings.stale_after;
        let store = self.store.clone();
        let job = id.to_owned();
        tokio::task::spawn_blocking(move || {
            if !heartbeat_fresh || store.is_fenced(&job, attempt)? {
                tracing::warn!(id = %job, attempt, "the lease was lost: another runner owns the job now");
                return Ok(());
            }
            if requeue {
                // Fencing our own attempt keeps a dead-node sweep from requeueing it twice.
                if store.fence(&job, attempt)? {
                    let why = reason.unwrap_or_default();
                    store.requeue(status, format!("attempt {attempt}: {why}"))?;
                }
                return Ok(());
            }
            store.finish(&status)
        })
        .await
        .map_err(JobError::Blocking)?
    }

    /// Runs one attempt's work. Its outputs go to the attempt's own directory, so a runner
    /// that lost its lease and has not noticed yet never writes over the next attempt's files.
    async fn execute(&self, spec: &JobSpec, attempt: u32, stop: CancellationToken) -> Execution {
        let (dir, outputs) = match self
            .store
            .job_dir(&spec.id)
            .and_then(|dir| Ok((dir, self.store.outputs_dir(&spec.id, attempt)?)))
        {
            Ok(paths) => paths,
            Err(error) => return Execution::failed_to_start(error.to_string()),
        };
        let deadline = Instant::now() + Duration::from_secs_f64(spec.limits.timeout_seconds);
        if let JobTask::Md5 = spec.task {
            let input = dir.join("inputs").join(&spec.inputs[0]);
            let result = outputs.join("result");
            let flag = Arc::new(AtomicBool::new(false));
            let hashing = flag.clone();
            let task = tokio::task::spawn_blocking(move || {
                let digest = md5_file(&input, &hashing, deadline)?;
                std::fs::write(&result, format!("{digest}\n")).map_err(|source| {
                    Md5Error::Read {
                        path: result.display().to_string(),
                        source,
                    }
                })?;
                Ok::<_, Md5Error>(digest)
            });
            let _stop_guard = StopFlag::new(stop, flag);
            return match task.await {
                Ok(Ok(digest)) => Execution {
                    exit_code: Some(0),
                    result: Some(digest),
                    ..Execution::default()
                },
                Ok(Err(Md5Error::TimedOut)) => Execution {
                    timed_out: true,
                    ..Execution::default()
                },
                Ok(Err(Md5Error::Cancelled)) => Execution {
                    stopped: true,
                    ..Execution::default()
                },
                Ok(Err(error)) => Execution::failed_to_start(error.to_string()),
                Err(error) => Execution::failed_to_start(format!("hashing failed: {error}")),
            };
        }
        let Some((image, argv)) = Program::argv(&spec.task) else {
            return Execution::failed_to_start("this runner does not know the language".into());
        };
        let program = Program {
            image,
            argv,
            inputs: dir.join("inputs"),
            stdin: spec.stdin.then(|| dir.join("stdin")),
            outputs,
            limits: spec.limits,
            deadline,
        };
        self.executor.run(program, stop).await
    }

    /// Stops the job when another process asks for a cancel through the volume's `cancel`
    /// marker; cancels from this process arrive at once through the store's channel.
    async fn watch_cancel_marker(&self, id: &str, stop: CancellationToken, cancelled: &AtomicBool) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            every.tick().await;
            if stop.is_cancelled() {
                continue;
            }
            let store = self.store.clone();
            let job = id.to_owned();
            let requested = tokio::task::spawn_blocking(move || store.cancel_requested(&job))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false);
            if requested {
                cancelled.store(true, Ordering::SeqCst);
                stop.cancel();
            }
        }
    }

    async fn cancel_listener(self: Arc<Self>, shutdown: CancellationToken) {
        let mut cancels = self.store.subscribe_cancels();
        loop {
            let id = tokio::select! {
                _ = shutdown.cancelled() => return,
                id = cancels.recv() => match id {
                    Ok(id) => id,
                    // Missed requests are still found through the marker file.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if let Some(local) = self.running.lock().expect("never poisoned").get(&id) {
                local.cancelled.store(true, Ordering::SeqCst);
                local.stop.cancel();
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut liveness = Liveness::new(self.settings.stale_after);
        let mut every = tokio::time::interval(self.settings.heartbeat_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(error) = self.heartbeat(false).await {
                tracing::warn!(%error, "cannot publish the heartbeat");
            }
            if let Err(error) = self.sweep(&mut liveness).await {
                tracing::warn!(%error, "the sweep for jobs of dead nodes failed");
            }
        }
    }

    async fn heartbeat(&self, stopped: bool) -> Result<(), JobError> {
        let running: Vec<RunningJob> = self
            .running
            .lock()
            .expect("never poisoned")
            .iter()
            .map(|(id, local)| RunningJob {
                id: id.clone(),
                attempt: local.attempt,
            })
            .collect();
        let store = self.store.clone();
        let node = self.settings.node.clone();
        let boot = self.boot.clone();
        let slots = self.settings.slots;
        let sequence = HEARTBEATS.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let (memory_used_bytes, memory_total_bytes) = memory();
            let cpu_percent = CPU.lock().expect("never poisoned").sample();
            store.write_heartbeat(&NodeHeartbeat {
                node,
                boot,
                sequence,
                cpu_percent,
                memory_used_bytes,
                memory_total_bytes,
                slots,
                running,
                updated_at: Utc::now(),
                stopped,
            })
        })
        .await
        .map_err(JobError::Blocking)??;
        *self.last_heartbeat.lock().expect("never poisoned") = Instant::now();
        Ok(())
    }

    /// Requeues the jobs whose holder's heartbeat went stale.
    async fn sweep(&self, liveness: &mut Liveness) -> Result<(), JobError> {
        let store = self.store.clone();
        let pending: Vec<((String, u32), Option<Lease>)> = self
            .elsewhere
            .lock()
            .expect("never poisoned")
            .iter()
            .map(|(key, lease)| (key.clone(), lease.clone()))
            .collect();
        let (heartbeats, leases) = tokio::task::spawn_blocking(move || {
            let heartbeats = store.heartbeats()?;
            let mut leases = Vec::new();
            for ((id, attempt), lease) in pending {
                let lease = match lease {
                    Some(lease) => Some(lease),
                    None => store.lease(&id, attempt).ok().flatten(),
                };
                leases.push(((id, attempt), lease));
            }
            Ok::<_, JobError>((heartbeats, leases))
        })
        .await
        .map_err(JobError::Blocking)??;
        let now = Instant::now();
        liveness.observe(&heartbeats, now);
        let mut dead = Vec::new();
        {
            let mut elsewhere = self.elsewhere.lock().expect("never poisoned");
            for (key, lease) in leases {
                if let Some(lease) = &lease {
                    if lease.node != CANCEL_HOLDER && !liveness.holds(lease, now) {
                        dead.push((key.clone(), lease.node.clone()));
                    }
                }
                if let Some(slot) = elsewhere.get_mut(&key) {
                    *slot = lease;
                }
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            for ((id, attempt), node) in dead {
                if !store.fence(&id, attempt)? {
                    continue;
                }
                let status = store.status(&id)?;
                if status.state.is_final() || status.attempt != attempt {
                    store.dequeue(&id, attempt)?;
                    continue;
                }
                tracing::warn!(%id, attempt, %node, "requeueing a job of a node that stopped responding");
                store.requeue(status, format!("node {node} stopped responding"))?;
            }
            Ok::<_, JobError>(())
        })
        .await
        .map_err(JobError::Blocking)??;
        self.store.queued().notify_waiters();
        Ok(())
    }
}

static HEARTBEATS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static CPU: Mutex<CpuMeter> = Mutex::new(CpuMeter::new());

/// Sets the hashing thread's stop flag when the attempt is stopped.
struct StopFlag {
    task: tokio::task::JoinHandle<()>,
}

impl StopFlag {
    fn new(stop: CancellationToken, flag: Arc<AtomicBool>) -> StopFlag {
        StopFlag {
            task: tokio::spawn(async move {
                stop.cancelled().await;
                flag.store(true, Ordering::SeqCst);
            }),
        }
    }
}

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.task.abort();
    }
}
