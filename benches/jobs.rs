//! `make bench`: the MD5 service against `md5sum` on the same 1 GiB file, throughput and
//! peak memory side by side; then a small MD5 job from submit to result through the TLS
//! gateway on local disk (p50), and jobs per second with two runner processes.

#[path = "../tests/support/mod.rs"]
mod support;

use support::cluster::{GatewayProcess, RunnerProcess};
use support::Client;

use std::io::Write;
use std::path::{Path, PathBuf};
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

/// How many times each side hashes the file; the best time of each counts, so a moment of
/// contention on a shared machine does not decide the comparison.
const ROUNDS: usize = 3;

/// `cargo bench --bench jobs` runs both parts; `-- md5` or `-- jobs` runs one.
fn main() -> anyhow::Result<()> {
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let wanted = |part: &str| only.as_deref().map_or(true, |only| only == part);
    if wanted("md5") {
        md5_against_md5sum()?;
    }
    if wanted("jobs") {
        tokio::runtime::Runtime::new()?.block_on(jobs_through_the_gateway())?;
    }
    Ok(())
}

fn md5_against_md5sum() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("cellgate-bench-{}", std::process::id()));
    write_file(&path)?;
    // Warm the page cache once so both sides read from memory.
    let _ = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status();

    let rss_before = peak_rss_kib(&std::fs::read_to_string("/proc/self/status")?);
    let (mut md5sum_best, mut ours_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let output = std::process::Command::new("md5sum").arg(&path).output()?;
        md5sum_best = md5sum_best.min(start.elapsed());
        let expected = String::from_utf8(output.stdout)?;
        let expected = expected.split_whitespace().next().unwrap_or("").to_owned();

        let start = Instant::now();
        let stop = AtomicBool::new(false);
        let digest = md5_file(&path, &stop, Instant::now() + Duration::from_secs(3600))?;
        ours_best = ours_best.min(start.elapsed());
        anyhow::ensure!(
            digest == expected,
            "digest {digest} differs from md5sum's {expected}"
        );
    }
    let rss_after = peak_rss_kib(&std::fs::read_to_string("/proc/self/status")?);
    std::fs::remove_file(&path)?;

    let rate = |time: Duration| SIZE as f64 / time.as_secs_f64() / 1e6;
    println!(
        "MD5 of 1 GiB, best of {ROUNDS}: md5sum {:.0} MB/s, cellgate {:.0} MB/s ({:.0} % of md5sum; target >= 95 %)",
        rate(md5sum_best),
        rate(ours_best),
        100.0 * md5sum_best.as_secs_f64() / ours_best.as_secs_f64()
    );
    println!("peak RSS of the bench process: {rss_before} KiB before hashing, {rss_after} KiB after (flat means streaming)");
    Ok(())
}

async fn jobs_through_the_gateway() -> anyhow::Result<()> {
    let name = format!("cellgate-bench-jobs-{}", std::process::id());
    let local = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&local)?;
    through_the_gateway(std::slice::from_ref(&local), "local disk").await?;
    let _ = std::fs::remove_dir_all(&local);
    // The same on GlusterFS when a test volume is mounted (gluster/test-volume.sh up), each
    // runner on its own mount as two nodes would be.
    let Ok(mounts) = std::env::var("CELLGATE_GLUSTER_MOUNTS") else {
        println!(
            "GlusterFS: not measured (set CELLGATE_GLUSTER_MOUNTS, see gluster/test-volume.sh)"
        );
        return Ok(());
    };
    let volumes: Vec<PathBuf> = mounts
        .split(',')
        .map(|mount| Path::new(mount).join(&name))
        .collect();
    std::fs::create_dir_all(&volumes[0])?;
    through_the_gateway(&volumes, "GlusterFS replica 2").await?;
    let _ = std::fs::remove_dir_all(&volumes[0]);
    Ok(())
}

/// Submits a small MD5 job and waits for its result; returns the digest.
async fn small_job(client: &Client, index: usize) -> anyhow::Result<String> {
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

/// Small-job latency and throughput through the gateway, laid out as on a swarm: two
/// `cellgate runner` processes, runner `i` on `volumes[i % volumes.len()]` (the same
/// directory through each node's mount), and a `cellgate gateway` over them.
async fn through_the_gateway(volumes: &[PathBuf], label: &str) -> anyhow::Result<()> {
    let mut runners = Vec::new();
    for (index, volume) in volumes.iter().cycle().take(2).enumerate() {
        let volume = volume.to_str().unwrap_or_default();
        let node = format!("bench-node{index}");
        runners.push(RunnerProcess::start(&["--jobs-volume", volume, "--runner-id", &node]).await);
    }
    let urls: Vec<&str> = runners.iter().map(|runner| runner.url.as_str()).collect();
    let gateway = GatewayProcess::start(&urls, &[]).await;
    let client = gateway.client();
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
        "small MD5 job, submit to result through the TLS gateway, {label}, 2 runner processes: p50 {:.1} ms, p90 {:.1} ms (target p50 <= 20 ms on local disk; anchor: a cron job once a minute)",
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
        "throughput with two runners, {label}: {jobs} small MD5 jobs, {in_flight} in flight, {:.0} jobs/s",
        jobs as f64 / elapsed.as_secs_f64()
    );
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
