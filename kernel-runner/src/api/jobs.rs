//! The batch jobs API: submit (JSON or a multipart upload streamed to the volume), list,
//! status, server-sent status events, output files with ranges, cancel, delete, and nodes.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cellgate_protocol::job::{
    job_images, JobLimits, JobList, JobRequest, JobSpec, JobStateKind, JobStatus, JobTask,
    NodeReport,
};
use cellgate_protocol::model::ApiError;
use chrono::Utc;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::response::{self, Body};
use crate::jobs::store::{CancelOutcome, Staged};
use crate::jobs::{languages, JobError, JobStore, Worker};

/// What the jobs API needs: the worker (for its store, node name and executor) and the
/// server's limits.
pub struct JobsApi {
    pub worker: Arc<Worker>,
    pub defaults: JobLimits,
    pub max: JobLimits,
    /// The largest upload, all files together.
    pub max_upload_bytes: u64,
    /// A node is reported dead when its heartbeat is older than this.
    pub stale_after: Duration,
}

impl JobsApi {
    fn store(&self) -> &Arc<JobStore> {
        self.worker.store()
    }
}

/// Answers the `/api/jobs` and `/api/nodes` routes; `None` for any other path.
pub async fn route(
    request: Request<Incoming>,
    segments: &[&str],
    api: &Arc<JobsApi>,
    tasks: &TaskTracker,
    closing: &CancellationToken,
) -> Result<Response<Body>, Request<Incoming>> {
    let method = request.method().clone();
    let result = match (method, segments) {
        (Method::GET, ["api", "nodes"]) => nodes(api).await,
        (Method::GET, ["api", "jobs"]) => list(request.uri().query(), api).await,
        (Method::POST, ["api", "jobs"]) => create(request, api).await,
        (Method::GET, ["api", "jobs", id]) => {
            let (store, id) = (api.store().clone(), id.to_string());
            blocking(move || store.status(&id))
                .await
                .map(|status| response::json(StatusCode::OK, &status))
        }
        (Method::DELETE, ["api", "jobs", id]) => {
            let (store, id, node) = (
                api.store().clone(),
                id.to_string(),
                api.worker.node().to_owned(),
            );
            blocking(move || store.delete(&id, &node))
                .await
                .map(|()| response::empty(StatusCode::NO_CONTENT))
        }
        (Method::POST, ["api", "jobs", id, "cancel"]) => {
            let (store, id, node) = (
                api.store().clone(),
                id.to_string(),
                api.worker.node().to_owned(),
            );
            blocking(move || store.cancel(&id, &node))
                .await
                .map(|outcome| match outcome {
                    CancelOutcome::Cancelled(status) => response::json(StatusCode::OK, &status),
                    CancelOutcome::Killing(status) => response::json(StatusCode::ACCEPTED, &status),
                })
        }
        (Method::GET, ["api", "jobs", id, "events"]) => events(id, api, tasks, closing).await,
        (Method::GET, ["api", "jobs", id, "files", name]) => {
            file(&request, id, name, api, tasks).await
        }
        (_, ["api", "nodes"] | ["api", "jobs", ..]) if known(segments) => {
            return Ok(response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {}",
                    request.method(),
                    request.uri().path()
                ),
            ))
        }
        (_, ["api", "jobs", ..]) => Err(JobError::NotFound(segments[2..].join("/"))),
        _ => return Err(request),
    };
    Ok(result.unwrap_or_else(|error| job_error(&error)))
}

fn known(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["api", "nodes"]
            | ["api", "jobs"]
            | ["api", "jobs", _]
            | ["api", "jobs", _, "cancel" | "events"]
            | ["api", "jobs", _, "files", _]
    )
}

pub fn job_error(error: &JobError) -> Response<Body> {
    if error.fault() == crate::error::Fault::Internal {
        tracing::error!(%error, "job store error");
    }
    let status = error.status();
    response::json(
        status,
        &ApiError {
            reason: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: error.to_string(),
        },
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(JobError::Blocking)?
}

async fn nodes(api: &JobsApi) -> Result<Response<Body>, JobError> {
    let store = api.store().clone();
    let heartbeats = blocking(move || store.heartbeats()).await?;
    let now = Utc::now();
    let stale = chrono::Duration::from_std(api.stale_after).unwrap_or(chrono::Duration::MAX);
    let reports: Vec<NodeReport> = heartbeats
        .into_iter()
        .map(|heartbeat| NodeReport {
            alive: !heartbeat.stopped && now - heartbeat.updated_at < stale,
            heartbeat,
        })
        .collect();
    Ok(response::json(StatusCode::OK, &reports))
}

async fn list(query: Option<&str>, api: &JobsApi) -> Result<Response<Body>, JobError> {
    let mut state = None;
    let mut after = None;
    let mut limit = 100usize;
    let mut newest_first = false;
    for (key, value) in url_pairs(query.unwrap_or("")) {
        match key.as_str() {
            "state" => {
                state = Some(value.parse::<JobStateKind>().map_err(|source| {
                    JobError::BadParameter {
                        parameter: "state",
                        source,
                    }
                })?)
            }
            "order" => {
                newest_first = match value.as_str() {
                    "oldest" => false,
                    "newest" => true,
                    _ => {
                        return Err(JobError::BadRequest(format!(
                            "order {value:?} is neither \"oldest\" nor \"newest\""
                        )))
                    }
                }
            }
            "after" => after = Some(value),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=1000).contains(limit))
                    .ok_or_else(|| {
                        JobError::BadRequest(format!("limit {value:?} is not between 1 and 1000"))
                    })?
            }
            other => return Err(JobError::BadRequest(format!("unknown parameter {other:?}"))),
        }
    }
    let store = api.store().clone();
    let jobs = blocking(move || store.list()).await?;
    let mut jobs: Vec<JobStatus> = jobs
        .into_iter()
        .filter(|job| state.is_none_or(|state| job.state.kind() == state))
        .collect();
    if newest_first {
        jobs.reverse();
    }
    if let Some(after) = after {
        let start = jobs
            .iter()
            .position(|job| job.id == after)
            .map_or(jobs.len(), |index| index + 1);
        jobs.drain(..start);
    }
    let next = (jobs.len() > limit).then(|| jobs[limit - 1].id.clone());
    jobs.truncate(limit);
    Ok(response::json(StatusCode::OK, &JobList { jobs, next }))
}

/// `key=value` pairs of a query string, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

async fn create(request: Request<Incoming>, api: &JobsApi) -> Result<Response<Body>, JobError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let store = api.store().clone();
    let mut staged = Some(blocking(move || store.stage()).await?);
    let result = if content_type.starts_with("multipart/form-data") {
        create_multipart(request, &content_type, api, &mut staged).await
    } else {
        create_json(request, api, &mut staged).await
    };
    let Some(staged) = staged else {
        return Err(result
            .err()
            .unwrap_or(JobError::BadRequest("the upload failed".into())));
    };
    let spec = match result {
        Ok(spec) => spec,
        Err(error) => {
            let store = api.store().clone();
            let _ = blocking(move || {
                store.discard(staged);
                Ok(())
            })
            .await;
            return Err(error);
        }
    };
    let store = api.store().clone();
    let status = blocking(move || store.commit(staged, &spec)).await?;
    let mut response = response::json(StatusCode::CREATED, &status);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/jobs/{}", status.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Checks what can be checked before any file is written.
fn check_request(request: &JobRequest, api: &JobsApi) -> Result<JobLimits, JobError> {
    let limits = api
        .defaults
        .resolve(&request.limits, &api.max)
        .map_err(JobError::BadRequest)?;
    if let Some(language) = &request.language {
        let known = languages::find(language)
            .ok_or_else(|| JobError::BadRequest(format!("unknown language {language:?}")))?;
        if !api.worker.executor().has_language(known) {
            return Err(JobError::BadRequest(format!(
                "language {language:?} cannot run on this server"
            )));
        }
    }
    if let Some(image) = &request.image {
        // Only the language images: never the service images beside them, nor a path.
        let known = job_images().contains(&image.as_str());
        if !known || !api.worker.executor().has_image(image) {
            return Err(JobError::BadRequest(format!(
                "unknown image {image:?}: one of {}",
                job_images().join(", ")
            )));
        }
    }
    Ok(limits)
}

fn spec_for(request: &JobRequest, limits: JobLimits, staged: &Staged) -> Result<JobSpec, JobError> {
    let task = request
        .task(staged.inputs())
        .map_err(JobError::BadRequest)?;
    if let JobTask::Run { .. } = task {
        Program::check(&task)?;
    }
    Ok(JobSpec {
        id: staged.id.clone(),
        name: request.name.clone(),
        task,
        inputs: staged.inputs().to_vec(),
        stdin: staged.has_stdin(),
        limits,
        created_at: Utc::now(),
    })
}

/// Programs need a known language; checked again at creation for a clear message.
struct Program;

impl Program {
    fn check(task: &JobTask) -> Result<(), JobError> {
        match crate::jobs::execute::Program::argv(task) {
            Some(_) => Ok(()),
            None => Err(JobError::BadRequest("the job's language is unknown".into())),
        }
    }
}

async fn create_json(
    request: Request<Incoming>,
    api: &JobsApi,
    staged: &mut Option<Staged>,
) -> Result<JobSpec, JobError> {
    let limit = api.max_upload_bytes;
    let body = Limited::new(request.into_body(), limit as usize)
        .collect()
        .await
        .map_err(|_| JobError::TooLarge { limit })?
        .to_bytes();
    let job: JobRequest = serde_json::from_slice(&body)
        .map_err(|error| JobError::BadRequest(format!("the body is not a job: {error}")))?;
    let limits = check_request(&job, api)?;
    let files = job.files.clone();
    let stdin = job.stdin.clone();
    // The files are small and already in memory; one blocking task writes them all.
    on_staged(staged, move |staged| {
        for (name, content) in &files {
            let (path, mut file) = staged.create_input(name)?;
            file.write_all(content.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(JobError::volume(path))?;
        }
        if let Some(stdin) = &stdin {
            let (path, mut file) = staged.create_stdin()?;
            file.write_all(stdin.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(JobError::volume(path))?;
        }
        Ok(())
    })
    .await?;
    spec_for(
        &job,
        limits,
        staged.as_ref().expect("the staged job is back"),
    )
}

/// Runs file operations on the staged job in a blocking task and puts it back.
async fn on_staged<T: Send + 'static>(
    staged: &mut Option<Staged>,
    work: impl FnOnce(&mut Staged) -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    let mut moved = staged.take().expect("the staged job is present");
    let (moved, result) = tokio::task::spawn_blocking(move || {
        let result = work(&mut moved);
        (moved, result)
    })
    .await
    .map_err(JobError::Blocking)?;
    *staged = Some(moved);
    result
}

async fn create_multipart(
    request: Request<Incoming>,
    content_type: &str,
    api: &JobsApi,
    staged: &mut Option<Staged>,
) -> Result<JobSpec, JobError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|error| JobError::BadRequest(format!("bad multipart content type: {error}")))?;
    let limit = api.max_upload_bytes;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit)
            .per_field(limit),
    );
    let body = http_body_util::BodyDataStream::new(request.into_body());
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut job: Option<(JobRequest, JobLimits)> = None;
    let mut written = 0u64;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return Err(multipart_error(error, limit)),
        };
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "spec" => {
                if job.is_some() {
                    return Err(JobError::BadRequest("the spec part is given twice".into()));
                }
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|error| multipart_error(error, limit))?;
                let request: JobRequest = serde_json::from_slice(&bytes).map_err(|error| {
                    JobError::BadRequest(format!("the spec part is not a job: {error}"))
                })?;
                if !request.files.is_empty() || request.stdin.is_some() {
                    return Err(JobError::BadRequest(
                        "in an upload, files and stdin are parts of their own".into(),
                    ));
                }
                let limits = check_request(&request, api)?;
                job = Some((request, limits));
            }
            "file" | "stdin" => {
                let file_name = if name == "stdin" {
                    None
                } else {
                    Some(field.file_name().map(str::to_owned).ok_or_else(|| {
                        JobError::BadRequest("a file part has no file name".into())
                    })?)
                };
                let (path, file) = on_staged(staged, move |staged| match file_name {
                    Some(file_name) => staged.create_input(&file_name),
                    None => staged.create_stdin(),
                })
                .await?;
                let mut file = tokio::fs::File::from_std(file);
                let mut field = field;
                loop {
                    let chunk = match field.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(error) => return Err(multipart_error(error, limit)),
                    };
                    written += chunk.len() as u64;
                    if written > limit {
                        return Err(JobError::TooLarge { limit });
                    }
                    tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                        .await
                        .map_err(JobError::volume(&path))?;
                }
                tokio::io::AsyncWriteExt::flush(&mut file)
                    .await
                    .map_err(JobError::volume(&path))?;
                file.sync_data().await.map_err(JobError::volume(&path))?;
            }
            other => {
                return Err(JobError::BadRequest(format!(
                    "unknown part {other:?}: expected spec, file or stdin"
                )))
            }
        }
    }
    let (request, limits) =
        job.ok_or_else(|| JobError::BadRequest("the upload has no spec part".into()))?;
    spec_for(
        &request,
        limits,
        staged.as_ref().expect("the staged job is back"),
    )
}

fn multipart_error(error: multer::Error, limit: u64) -> JobError {
    match error {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            JobError::TooLarge { limit }
        }
        other => JobError::BadRequest(format!("the upload is malformed: {other}")),
    }
}

/// A body fed by a channel: for event streams and file downloads.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn sse_event(status: &JobStatus) -> Bytes {
    let json = serde_json::to_string(status).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {json}\n\n", status.state.name()))
}

/// How soon a job's status is first re-read for an event stream, and the longest wait
/// between two reads: the wait doubles from the first to the last while nothing changes,
/// so a short job run by another runner is seen finished within milliseconds, and a long
/// one costs a read a second.
const EVENTS_FIRST_READ: Duration = Duration::from_millis(10);
const EVENTS_LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Status changes of one job as server-sent events, from its current state to its final
/// one. Changes made in this process arrive through the store's channel at once; changes
/// made by runners in other processes are found by re-reading the status, soon after the
/// last change and then less and less often.
async fn events(
    id: &str,
    api: &JobsApi,
    tasks: &TaskTracker,
    closing: &CancellationToken,
) -> Result<Response<Body>, JobError> {
    let store = api.store().clone();
    let mut updates = store.subscribe();
    let job = id.to_owned();
    let first = blocking({
        let store = store.clone();
        move || store.status(&job)
    })
    .await?;
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let closing = closing.clone();
    let id = id.to_owned();
    tasks.spawn(async move {
        let mut last = first;
        if sender.send(sse_event(&last)).await.is_err() || last.state.is_final() {
            return;
        }
        let mut wait = EVENTS_FIRST_READ;
        let mut read_at = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::select! {
                _ = closing.cancelled() => return,
                _ = sender.closed() => return,
                update = updates.recv() => match update {
                    Ok(status) if status.id == id => Some(status),
                    Ok(_) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(read_at) => {
                    wait = (wait * 2).min(EVENTS_LONGEST_WAIT);
                    read_at = tokio::time::Instant::now() + wait;
                    let store = store.clone();
                    let job = id.clone();
                    match tokio::task::spawn_blocking(move || store.status(&job)).await {
                        Ok(Ok(status)) => Some(status),
                        // A deleted job ends its stream.
                        Ok(Err(JobError::NotFound(_))) => return,
                        _ => None,
                    }
                }
            };
            let Some(status) = next else { continue };
            if status == last {
                continue;
            }
            if sender.send(sse_event(&status)).await.is_err() || status.state.is_final() {
                return;
            }
            last = status;
            // One change is often followed by the next (running, then finished).
            wait = EVENTS_FIRST_READ;
            read_at = tokio::time::Instant::now() + wait;
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(ChannelBody(receiver).boxed())
        .expect("static response parts are valid"))
}

/// A byte range of a file of `size` bytes, from a `Range` header.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), JobError> {
    let spec = value.strip_prefix("bytes=").ok_or(JobError::BadRange)?;
    if spec.contains(',') {
        return Err(JobError::BadRange);
    }
    let (start, end) = spec.split_once('-').ok_or(JobError::BadRange)?;
    let number = |text: &str| text.trim().parse::<u64>().map_err(|_| JobError::BadRange);
    let (start, end) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, false) => {
            let suffix = number(end)?.min(size);
            (size - suffix, size.saturating_sub(1))
        }
        (false, true) => (number(start)?, size.saturating_sub(1)),
        (false, false) => (number(start)?, number(end)?.min(size.saturating_sub(1))),
        (true, true) => return Err(JobError::BadRange),
    };
    if size == 0 || start > end || start >= size {
        return Err(JobError::BadRange);
    }
    Ok((start, end))
}

async fn file(
    request: &Request<Incoming>,
    id: &str,
    name: &str,
    api: &JobsApi,
    tasks: &TaskTracker,
) -> Result<Response<Body>, JobError> {
    // Finding the current attempt reads the status: a missing job answers as such.
    let path = {
        let store = api.store().clone();
        let (job, file) = (id.to_owned(), name.to_owned());
        blocking(move || store.output_path(&job, &file)).await?
    };
    let missing = || JobError::NoSuchOutput {
        id: id.to_owned(),
        name: name.to_owned(),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing());
        }
        Err(error) => return Err(JobError::volume(path)(error)),
    };
    let size = file
        .metadata()
        .await
        .map_err(JobError::volume(&path))?
        .len();
    let range = match request.headers().get(header::RANGE) {
        Some(value) => Some(parse_range(value.to_str().unwrap_or(""), size)?),
        None => None,
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(JobError::volume(&path))?;
    let (sender, receiver) = mpsc::channel::<Bytes>(8);
    tasks.spawn(async move {
        let mut left = length;
        let mut buffer = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = (buffer.len() as u64).min(left) as usize;
            let read = match file.read(&mut buffer[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            left -= read as u64;
            if sender
                .send(Bytes::copy_from_slice(&buffer[..read]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // Outputs show as text in a browser, and never as anything that could run there: a
    // program's output is whatever its author wrote.
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        )
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes");
    builder = match range {
        Some((start, end)) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
        None => builder.status(StatusCode::OK),
    };
    Ok(builder
        .body(ChannelBody(receiver).boxed())
        .expect("static response parts are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), (95, 99));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=a-b",
        ] {
            assert!(parse_range(bad, 100).is_err(), "{bad}");
        }
        assert!(parse_range("bytes=0-0", 0).is_err());
    }
}
