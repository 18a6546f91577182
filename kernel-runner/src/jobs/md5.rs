//! The MD5 service: a file's digest computed natively, streaming through a few fixed buffers
//! so memory stays flat whatever the file's size.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use md5::{Digest, Md5};

/// The read size: large enough that system calls and hand-overs between the two threads cost
/// little next to hashing (64 KiB buffers cost 1 % of the throughput), small enough that the
/// buffers in flight stay in the processor's caches.
const BUFFER: usize = 256 * 1024;

/// Buffers in flight between the reader and the hasher: memory is `BUFFERS * BUFFER` whatever
/// the file's size.
const BUFFERS: usize = 4;

/// Why hashing stopped before the end of the file.
#[derive(Debug, thiserror::Error)]
pub enum Md5Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the wall timeout passed")]
    TimedOut,
    #[error("cancelled")]
    Cancelled,
}

/// The lowercase hex MD5 of the file at `path`. Blocking: call it from `spawn_blocking` or a
/// thread of its own. `stop` and `deadline` are checked between buffers.
///
/// Reading and hashing overlap: a reader thread fills buffers while this thread hashes the
/// ones already read, so copying from the page cache or the network volume costs no hashing
/// time. Buffers go back to the reader once hashed, so nothing is allocated per read.
pub fn md5_file(path: &Path, stop: &AtomicBool, deadline: Instant) -> Result<String, Md5Error> {
    let read_error = |source| Md5Error::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        empty_tx
            .send(vec![0u8; BUFFER])
            .expect("the channel holds every buffer");
    }
    // `move`: the hasher's ends of the channels drop when it returns, which ends the reader
    // before the scope waits for it.
    std::thread::scope(move |scope| {
        scope.spawn(move || {
            // Ends when the hasher drops its ends of the channels, or at the end of the file.
            while let Ok(mut buffer) = empty_rx.recv() {
                let read = loop {
                    match file.read(&mut buffer) {
                        Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                let last = !matches!(read, Ok(read) if read > 0);
                if full_tx.send(read.map(|read| (buffer, read))).is_err() || last {
                    return;
                }
            }
        });
        let mut hasher = Md5::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(Md5Error::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(Md5Error::TimedOut);
            }
            let (buffer, read) = full_rx
                .recv()
                .expect("the reader sends until the end of the file")
                .map_err(read_error)?;
            if read == 0 {
                return Ok(hex(&hasher.finalize()));
            }
            hasher.update(&buffer[..read]);
            // The reader may have finished already; then the buffer is simply dropped.
            let _ = empty_tx.send(buffer);
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn digest_of(content: &[u8]) -> String {
        let path = std::env::temp_dir().join(format!("cellgate-md5-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, content).unwrap();
        let stop = AtomicBool::new(false);
        let digest = md5_file(&path, &stop, Instant::now() + Duration::from_secs(60)).unwrap();
        std::fs::remove_file(path).unwrap();
        digest
    }

    #[test]
    fn digests_match_the_rfc_1321_test_suite() {
        assert_eq!(digest_of(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(digest_of(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            digest_of(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        // Crossing the buffer boundary must not change anything.
        let big = vec![b'a'; BUFFER * 2 + 17];
        let mut hasher = Md5::new();
        hasher.update(&big);
        assert_eq!(digest_of(&big), hex(&hasher.finalize()));
    }

    #[test]
    fn a_stop_request_ends_hashing() {
        let stop = AtomicBool::new(true);
        let result = md5_file(
            Path::new("/dev/zero"),
            &stop,
            Instant::now() + Duration::from_secs(5),
        );
        assert!(matches!(result, Err(Md5Error::Cancelled)));
        let stop = AtomicBool::new(false);
        let result = md5_file(
            Path::new("/dev/zero"),
            &stop,
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(result, Err(Md5Error::TimedOut)));
    }
}
