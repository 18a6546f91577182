//! A job submission as a `multipart/form-data` body streamed from disk: the `spec` part, then
//! each file part read in chunks (so a file of any size costs a few buffers of memory), then
//! an optional `stdin` part. Its length is known in advance, so the server can refuse an
//! upload over its limit before a byte of it is sent.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

use super::http::{read_success, Body, Client};
use super::progress::Progress;
use cellgate_protocol::job::{JobRequest, JobStatus};

const CHUNK: usize = 256 << 10;

/// One file of an upload: where it is read from and the name the job sees.
#[derive(Debug, Clone)]
pub struct UploadFile {
    pub path: PathBuf,
    pub name: String,
}

/// Everything one submission sends.
#[derive(Debug)]
pub struct Upload {
    pub spec: JobRequest,
    pub files: Vec<UploadFile>,
    pub stdin: Option<PathBuf>,
}

enum Piece {
    Bytes(Bytes),
    File(PathBuf, u64),
}

impl Upload {
    /// Sends the upload as `POST /api/jobs` and returns the created job.
    pub async fn submit(self, client: &Client, progress: &Progress) -> anyhow::Result<JobStatus> {
        let boundary = format!("cellgate-{}", uuid::Uuid::new_v4().simple());
        let mut pieces = Vec::new();
        let spec = serde_json::to_vec(&self.spec)?;
        pieces.push(Piece::Bytes(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\nContent-Type: application/json\r\n\r\n"
            )
            .into(),
        ));
        pieces.push(Piece::Bytes(spec.into()));
        let mut parts: Vec<(&str, Option<&str>, &PathBuf)> = self
            .files
            .iter()
            .map(|file| ("file", Some(file.name.as_str()), &file.path))
            .collect();
        if let Some(stdin) = &self.stdin {
            parts.push(("stdin", None, stdin));
        }
        for (part, file_name, path) in parts {
            let size = tokio::fs::metadata(path)
                .await
                .with_context(|| format!("{}", path.display()))?;
            if !size.is_file() {
                anyhow::bail!("{}: not a regular file", path.display());
            }
            let disposition = match file_name {
                Some(name) => format!("form-data; name=\"{part}\"; filename=\"{}\"", quote(name)),
                None => format!("form-data; name=\"{part}\""),
            };
            pieces.push(Piece::Bytes(
                format!(
                    "\r\n--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .into(),
            ));
            pieces.push(Piece::File(path.clone(), size.len()));
        }
        pieces.push(Piece::Bytes(format!("\r\n--{boundary}--\r\n").into()));
        let length: u64 = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Bytes(bytes) => bytes.len() as u64,
                Piece::File(_, size) => *size,
            })
            .sum();
        let body = body(pieces, progress.clone());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))?,
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        let response = client
            .send(Method::POST, "/api/jobs", headers, body)
            .await?;
        let bytes = read_success(response).await?;
        serde_json::from_slice(&bytes).context("the server's answer is not a job")
    }
}

/// Quotes a file name for a `Content-Disposition` parameter. Names the server accepts have no
/// control characters, so only `"` and `\` need escaping.
fn quote(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The pieces as one body: fixed bytes as they are, files read chunk by chunk, and the
/// progress display advanced as chunks go out.
fn body(pieces: Vec<Piece>, progress: Progress) -> Body {
    let chunks = stream::iter(pieces).flat_map(move |piece| {
        let progress = progress.clone();
        match piece {
            Piece::Bytes(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
            Piece::File(path, _) => stream::unfold(
                (None::<tokio::fs::File>, path, false),
                move |(file, path, done)| {
                    let progress = progress.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let mut file = match file {
                            Some(file) => file,
                            None => match tokio::fs::File::open(&path).await {
                                Ok(file) => file,
                                Err(error) => return Some((Err(error), (None, path, true))),
                            },
                        };
                        let mut buffer = vec![0; CHUNK];
                        match file.read(&mut buffer).await {
                            Ok(0) => None,
                            Ok(read) => {
                                buffer.truncate(read);
                                progress.add(read as u64);
                                Some((Ok(Bytes::from(buffer)), (Some(file), path, false)))
                            }
                            Err(error) => Some((Err(error), (None, path, true))),
                        }
                    }
                },
            )
            .boxed(),
        }
    });
    StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data))).boxed_unsync()
}
