//! `cellgate submit`: run a source file in its language, or a command line in an image, as a
//! batch job; print the job's id, wait, print its output and exit with its exit code.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cellgate_protocol::job::{
    guess_language, JobKind, JobRequest, JobState, JobStatus, RequestedJobLimits,
};

use super::http::{Client, ServerArgs};
use super::progress::Progress;
use super::upload::{Upload, UploadFile};
use super::wait;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The program's language (python, javascript, bash, ruby, php, r, octave, java, c, cpp,
    /// go, rust); guessed from the first file's extension when absent.
    #[arg(long, short)]
    pub language: Option<String>,
    /// Run `--command` in this image instead of a program.
    #[arg(long, requires = "command", conflicts_with = "language")]
    pub image: Option<String>,
    /// The command line, run with `sh -c` in `--image`.
    #[arg(long, requires = "image")]
    pub command: Option<String>,
    /// A file whose content is the program's standard input.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// The job's name, free text (default: the program's file name or the command).
    #[arg(long)]
    pub name: Option<String>,
    /// Wall-clock seconds the job may take.
    #[arg(long)]
    pub timeout: Option<f64>,
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Times a failed attempt is tried again.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Print the job id on standard output and exit without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Source files: the first is the program, the others sit next to it. Arguments for the
    /// program follow `--`.
    pub files: Vec<PathBuf>,
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Submits the job and, unless detached, returns the exit code to leave with.
pub async fn run(args: SubmitArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.server)?;
    let upload = upload(&args)?;
    let total = upload
        .files
        .iter()
        .filter_map(|file| std::fs::metadata(&file.path).ok())
        .map(|meta| meta.len())
        .sum();
    let progress = Progress::new("upload", Some(total));
    let job = upload.submit(&client, &progress).await?;
    progress.finish();
    if args.detach {
        println!("{}", job.id);
        return Ok(0);
    }
    eprintln!("job {}", job.id);
    let waiting = Progress::new("job", None);
    let status = wait::until_final(&client, &job.id, &waiting).await?;
    waiting.finish();
    wait::copy_output(&client, &job.id, "stdout", &mut tokio::io::stdout()).await?;
    wait::copy_output(&client, &job.id, "stderr", &mut tokio::io::stderr()).await?;
    Ok(exit_code(&status))
}

fn upload(args: &SubmitArgs) -> anyhow::Result<Upload> {
    let mut files = Vec::new();
    for path in &args.files {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("{}: not a file name the server accepts", path.display()))?;
        files.push(UploadFile {
            path: path.clone(),
            name: name.to_owned(),
        });
    }
    let limits = RequestedJobLimits {
        timeout_seconds: args.timeout,
        cpus: args.cpus,
        memory_bytes: args.memory,
        retries: args.retries,
        output_bytes: None,
    };
    let spec = match (&args.image, &args.command) {
        (Some(image), Some(command)) => {
            if !args.args.is_empty() {
                bail!("a command job takes no program arguments; put them in --command");
            }
            JobRequest {
                name: args.name.clone().unwrap_or_else(|| command.clone()),
                kind: JobKind::Command,
                language: None,
                image: Some(image.clone()),
                command: Some(command.clone()),
                args: Vec::new(),
                stdin: None,
                files: Default::default(),
                main: None,
                limits,
            }
        }
        _ => {
            let Some(main) = files.first() else {
                bail!("name a source file to run, or give --image and --command");
            };
            let language = match &args.language {
                Some(language) => language.clone(),
                None => guess_language(&main.name)
                    .with_context(|| {
                        format!("cannot tell the language of {}; give --language", main.name)
                    })?
                    .to_owned(),
            };
            JobRequest {
                name: args.name.clone().unwrap_or_else(|| main.name.clone()),
                kind: JobKind::Run,
                language: Some(language),
                image: None,
                command: None,
                args: args.args.clone(),
                stdin: None,
                files: Default::default(),
                main: (files.len() > 1).then(|| main.name.clone()),
                limits,
            }
        }
    };
    Ok(Upload {
        spec,
        files,
        stdin: args.stdin.clone(),
    })
}

/// The exit code a shell would show for the job: its own, 128 + a killing signal, 124 for a
/// timeout (as `timeout(1)`), 1 for any other failure.
pub fn exit_code(status: &JobStatus) -> i32 {
    if status.state != JobState::Succeeded {
        let reason = status.reason.as_deref().unwrap_or("no reason given");
        eprintln!("cellgate: the job ended {}: {reason}", status.state.name());
    }
    match (&status.state, status.exit_code, status.signal) {
        (JobState::TimedOut, _, _) => 124,
        (_, Some(code), _) => code,
        (_, None, Some(signal)) => 128 + signal,
        (JobState::Succeeded, None, None) => 0,
        _ => 1,
    }
}
