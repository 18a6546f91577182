//! `make bench`: the MD5 service against `md5sum` on the same 1 GiB file, throughput and
//! peak memory side by side; then a small MD5 job from submit to result through the TLS
//! gateway on local disk (p50), and jobs per second with two runners.

#[path = "../tests/support/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use cellgate_kernel_runner::jobs::md5::md5_file;

const SIZE: usize = 1024 * 1024 * 1024;

fn peak_rss_kib(status: &str) -> u64 {
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("cellgate-bench-{}", std::process::id()));
    write_file(&path)?;
    // Warm the page cache once so both sides read from memory.
    let _ = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status();

    let start = Instant::now();
    let output = std::process::Command::new("md5sum").arg(&path).output()?;
    let md5sum_time = start.elapsed();
    let expected = String::from_utf8(output.stdout)?;
    let expected = expected.split_whitespace().next().unwrap_or("").to_owned();

    let rss_before = peak_rss_kib(&std::fs::read_to_string("/proc/self/status")?);
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let digest = md5_file(&path, &stop, Instant::now() + Duration::from_secs(3600))?;
    let ours = start.elapsed();
    let rss_after = peak_rss_kib(&std::fs::read_to_string("/proc/self/status")?);
    std::fs::remove_file(&path)?;
    anyhow::ensure!(
        digest == expected,
        "digest {digest} differs from md5sum's {expected}"
    );

    let rate = |time: Duration| SIZE as f64 / time.as_secs_f64() / 1e6;
    println!(
        "MD5 of 1 GiB: md5sum {:.0} MB/s, cellgate {:.0} MB/s ({:.0} % of md5sum; target >= 95 %)",
        rate(md5sum_time),
        rate(ours),
        100.0 * md5sum_time.as_secs_f64() / ours.as_secs_f64()
    );
    println!("peak RSS of the bench process: {rss_before} KiB before hashing, {rss_after} KiB after (flat means streaming)");
    tokio::runtime::Runtime::new()?.block_on(async {
        through_the_gateway(&std::env::temp_dir(), "local disk").await?;
        // The same on GlusterFS when a test volume is mounted (gluster/test-volume.sh up).
        match std::env::var("CELLGATE_GLUSTER_MOUNTS") {
            Ok(mounts) => {
                let mount = mounts.split(',').next().unwrap_or_default();
                through_the_gateway(Path::new(mount), "GlusterFS replica 2").await
            }
            Err(_) => {
                println!("GlusterFS: not measured (set CELLGATE_GLUSTER_MOUNTS, see gluster/test-volume.sh)");
                Ok(())
            }
        }
    })
}

/// Starts `cellgate serve --runners 2` on a fresh directory and returns it with its
/// address and token.
async fn serve(dir: &Path) -> anyhow::Result<(tokio::process::Child, String, String)> {
    use tokio::io::AsyncBufReadExt;
    let token = "bench-token";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cellgate"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--runners",
            "2",
            "--token",
            token,
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.strip_prefix("cellgate ready: https://") {
            let address = url.split('/').next().unwrap_or_default().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, address, token.to_owned()));
        }
    }
    anyhow::bail!("cellgate serve exited before it was ready")
}

/// Submits a small MD5 job and waits for its result; returns the digest.
async fn small_job(client: &client::Client, index: usize) -> anyhow::Result<String> {
    let job =
        serde_json::json!({"kind": "md5", "files": {"small.txt": format!("small job {index}")}});
    let created = client.post("/api/jobs", job).await;
    anyhow::ensure!(
        created.status == http::StatusCode::CREATED,
        "submit answered {}",
        created.status
    );
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let events = client.get(&format!("/api/jobs/{id}/events")).await;
    let text = String::from_utf8_lossy(&events.body).into_owned();
    let last = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .next_back()
        .unwrap_or("{}");
    let status: serde_json::Value = serde_json::from_str(last)?;
    anyhow::ensure!(status["state"] == "succeeded", "job ended {status}");
    Ok(status["result"].as_str().unwrap_or_default().to_owned())
}

/// Small-job latency and throughput through the gateway, with the volume under `base`.
async fn through_the_gateway(base: &Path, volume: &str) -> anyhow::Result<()> {
    let dir = base.join(format!("cellgate-bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (server, address, token) = serve(&dir).await?;
    let client = client::Client::new(&address, Some(&token));
    for index in 0..10 {
        small_job(&client, index).await?;
    }
    let mut times = Vec::new();
    for index in 0..200 {
        let start = Instant::now();
        small_job(&client, index).await?;
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |time: Duration| time.as_secs_f64() * 1e3;
    println!(
        "small MD5 job, submit to result through the TLS gateway, {volume}, 2 runners: p50 {:.1} ms, p90 {:.1} ms (target p50 <= 20 ms on local disk; anchor: a cron job once a minute)",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10])
    );

    let jobs = 400;
    let in_flight = 16;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..in_flight {
        let client = client.clone();
        tasks.spawn(async move {
            let mut index = worker;
            while index < jobs {
                small_job(&client, index).await?;
                index += in_flight;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    println!(
        "throughput with two runners, {volume}: {jobs} small MD5 jobs, {in_flight} in flight, {:.0} jobs/s",
        jobs as f64 / elapsed.as_secs_f64()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn write_file(path: &Path) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1024 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..SIZE / block.len() {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}
