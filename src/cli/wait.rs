//! Waiting for a job's final state by following its server-sent events, and fetching its
//! output files once it is done.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use cellgate_protocol::job::JobStatus;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::http::{read_success, server_message, Client};
use super::progress::Progress;

/// How often a broken event stream is opened again before giving up.
const RECONNECTS: usize = 5;

/// The job's status once it is final, showing each state on `progress` on the way.
pub async fn until_final(
    client: &Client,
    id: &str,
    progress: &Progress,
) -> anyhow::Result<JobStatus> {
    let mut last_error = None;
    for _ in 0..=RECONNECTS {
        match follow(client, id, progress).await {
            Ok(Some(status)) => return Ok(status),
            // The stream ended early (a runner restarting, a proxy cutting it): ask again.
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        let status: JobStatus = client
            .json(http::Method::GET, &format!("/api/jobs/{id}"))
            .await?;
        if status.state.is_final() {
            return Ok(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the job's event stream kept breaking")))
}

/// Reads the event stream until a final status (returned) or its end (`None`).
async fn follow(
    client: &Client,
    id: &str,
    progress: &Progress,
) -> anyhow::Result<Option<JobStatus>> {
    let response = client.get(&format!("/api/jobs/{id}/events")).await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await?.to_bytes();
        bail!("{}", server_message(status, &body));
    }
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the job's event stream broke")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = find(&buffer, b"\n\n") {
            let event = buffer.split_to(end + 2);
            let text = String::from_utf8_lossy(&event);
            let json: String = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if json.is_empty() {
                continue;
            }
            let status: JobStatus = serde_json::from_str(&json)
                .context("the server sent an event that is not a job")?;
            progress.status(status.state.name());
            if status.state.is_final() {
                return Ok(Some(status));
            }
        }
    }
    Ok(None)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Copies an output file of the job to `out` as it arrives; a missing file is empty.
pub async fn copy_output(
    client: &Client,
    id: &str,
    name: &str,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let response = client.get(&format!("/api/jobs/{id}/files/{name}")).await?;
    if response.status() == http::StatusCode::NOT_FOUND {
        return Ok(());
    }
    if !response.status().is_success() {
        read_success(response).await?;
        return Ok(());
    }
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(mut data) = frame?.into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                out.write_all(chunk).await?;
                let advance = chunk.len();
                data.advance(advance);
            }
        }
    }
    out.flush().await?;
    Ok(())
}
