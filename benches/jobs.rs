//! `make bench`: the MD5 service against `md5sum` on the same 1 GiB file, throughput and
//! peak memory side by side.

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
