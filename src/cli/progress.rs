//! A one-line progress display on standard error, shown only when standard error is a
//! terminal, so scripts and pipes see nothing but the results.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redraws happen at most this often, so a fast upload does not spend its time printing.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// A shared byte counter with a label; `None` everywhere when not on a terminal.
#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    label: String,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    last_drawn: std::sync::Mutex<Instant>,
}

impl Progress {
    /// A display for `total` bytes (or an open-ended wait when `None`).
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        let inner = std::io::stderr().is_terminal().then(|| {
            Arc::new(Inner {
                label: label.into(),
                total,
                done: AtomicU64::new(0),
                started: Instant::now(),
                last_drawn: std::sync::Mutex::new(Instant::now() - REDRAW_EVERY),
            })
        });
        Progress { inner }
    }

    /// A display that never shows.
    pub fn hidden() -> Progress {
        Progress { inner: None }
    }

    pub fn add(&self, bytes: u64) {
        if let Some(inner) = &self.inner {
            inner.done.fetch_add(bytes, Ordering::Relaxed);
            inner.draw(false, None);
        }
    }

    /// Shows `status` (e.g. a job's state) after the label while waiting.
    pub fn status(&self, status: &str) {
        if let Some(inner) = &self.inner {
            inner.draw(true, Some(status));
        }
    }

    /// Clears the line so what follows starts clean.
    pub fn finish(&self) {
        if self.inner.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

impl Inner {
    fn draw(&self, force: bool, status: Option<&str>) {
        {
            let Ok(mut last) = self.last_drawn.lock() else {
                return;
            };
            if !force && last.elapsed() < REDRAW_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let line = match (status, self.total) {
            (Some(status), _) => format!("{} {status} {elapsed:.1}s", self.label),
            (None, Some(total)) if total > 0 => {
                let fraction = (done as f64 / total as f64).min(1.0);
                let filled = (fraction * 30.0) as usize;
                format!(
                    "{} [{}{}] {:>3.0}% {} / {}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    fraction * 100.0,
                    human(done),
                    human(total)
                )
            }
            (None, _) => format!("{} {}", self.label, human(done)),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
