//! `cellgate md5 FILE...`: the MD5 service as a drop-in for `md5sum`. Each file is uploaded as
//! an `md5` job, and the results are printed exactly as `md5sum` prints them, in the order
//! the files were given.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use cellgate_protocol::job::{JobKind, JobRequest, JobState};
use futures_util::stream::{self, StreamExt};

use super::http::{Client, ServerArgs};
use super::progress::Progress;
use super::upload::{Upload, UploadFile};
use super::wait;

#[derive(Debug, clap::Args)]
pub struct Md5Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Keep the jobs on the server afterwards instead of deleting them.
    #[arg(long)]
    pub keep: bool,
    /// The files to hash.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Hashes every file; returns the process's exit code (1 when any file failed, as `md5sum`).
pub async fn run(args: Md5Args) -> anyhow::Result<i32> {
    let client = Client::new(&args.server)?;
    let total: u64 = args
        .files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum();
    let progress = Progress::new("md5", Some(total));
    let keep = args.keep;
    let mut results = stream::iter(args.files.iter().cloned())
        .map(|path| {
            let (client, progress) = (client.clone(), progress.clone());
            async move {
                let outcome = hash(&client, &path, &progress, keep).await;
                (path, outcome)
            }
        })
        .buffered(usize::from(args.parallel));
    let mut failed = false;
    while let Some((path, outcome)) = results.next().await {
        progress.finish();
        match outcome {
            Ok(hex) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&line(&hex, path.as_os_str().as_bytes()))?;
                stdout.flush()?;
            }
            Err(error) => {
                failed = true;
                eprintln!("cellgate md5: {}: {error:#}", path.display());
            }
        }
    }
    Ok(i32::from(failed))
}

async fn hash(
    client: &Client,
    path: &std::path::Path,
    progress: &Progress,
    keep: bool,
) -> anyhow::Result<String> {
    let meta = tokio::fs::metadata(path).await.map_err(io_message)?;
    if meta.is_dir() {
        anyhow::bail!("Is a directory");
    }
    let upload = Upload {
        spec: JobRequest {
            name: path.to_string_lossy().into_owned(),
            kind: JobKind::Md5,
            language: None,
            image: None,
            command: None,
            args: Vec::new(),
            stdin: None,
            files: Default::default(),
            main: None,
            limits: Default::default(),
        },
        // The job sees a fixed name: the user's may be anything a file system allows,
        // which the server's file-name rules need not accept; the job's name keeps it.
        files: vec![UploadFile {
            path: path.to_owned(),
            name: "input".to_owned(),
        }],
        stdin: None,
    };
    let job = upload.submit(client, progress).await?;
    let status = wait::until_final(client, &job.id, &Progress::hidden()).await?;
    if !keep {
        // The answer is in hand; a failed clean-up leaves a finished job behind, nothing worse.
        let _ = client
            .send(
                http::Method::DELETE,
                &format!("/api/jobs/{}", job.id),
                http::HeaderMap::new(),
                super::http::empty(),
            )
            .await;
    }
    match (status.state, status.result) {
        (JobState::Succeeded, Some(hex)) => Ok(hex),
        (state, _) => anyhow::bail!(
            "the job {} ended {}{}",
            job.id,
            state.name(),
            status
                .reason
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        ),
    }
}

/// The words `md5sum` uses for a file it cannot read, e.g. "No such file or directory".
fn io_message(error: std::io::Error) -> anyhow::Error {
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    };
    anyhow::anyhow!(text)
}

/// One output line as GNU `md5sum` (coreutils 9) writes it: a name holding a backslash, a
/// newline or a carriage return is escaped, and the line then starts with a backslash.
pub fn line(hex: &str, name: &[u8]) -> Vec<u8> {
    let escape = name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    let mut out = Vec::with_capacity(hex.len() + name.len() + 4);
    if escape {
        out.push(b'\\');
    }
    out.extend_from_slice(hex.as_bytes());
    out.extend_from_slice(b"  ");
    for &byte in name {
        match byte {
            b'\\' if escape => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_like_md5sum() {
        let hex = "0cc175b9c0f1b6a831c399e269772661";
        assert_eq!(line(hex, b"a.txt"), format!("{hex}  a.txt\n").into_bytes());
        assert_eq!(
            line(hex, b"back\\slash"),
            format!("\\{hex}  back\\\\slash\n").into_bytes()
        );
        assert_eq!(
            line(hex, b"new\nline"),
            format!("\\{hex}  new\\nline\n").into_bytes()
        );
        assert_eq!(
            line(hex, b"cr\rx"),
            format!("\\{hex}  cr\\rx\n").into_bytes()
        );
    }
}
