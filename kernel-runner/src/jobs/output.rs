//! Job output streamed to a file with a size cap: past the cap the stream is still drained,
//! so the program never blocks on a full pipe, but nothing more is written.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// What one stream produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Captured {
    pub written: u64,
    pub truncated: bool,
}

/// Copies `reader` into a new file at `path`, keeping at most `cap` bytes.
pub async fn capture(
    mut reader: impl AsyncRead + Unpin,
    path: &Path,
    cap: u64,
) -> std::io::Result<Captured> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut captured = Captured::default();
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let room = cap.saturating_sub(captured.written);
        let keep = (read as u64).min(room) as usize;
        if keep > 0 {
            file.write_all(&buffer[..keep]).await?;
            captured.written += keep as u64;
        }
        if keep < read {
            captured.truncated = true;
        }
    }
    file.flush().await?;
    file.sync_data().await?;
    Ok(captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_and_flagged() {
        let path = std::env::temp_dir().join(format!("cellgate-out-{}", uuid::Uuid::new_v4()));
        let data = vec![b'x'; 100_000];
        let captured = capture(&data[..], &path, 1000).await.unwrap();
        assert_eq!(
            captured,
            Captured {
                written: 1000,
                truncated: true
            }
        );
        assert_eq!(std::fs::read(&path).unwrap().len(), 1000);
        let captured = capture(&b"hello"[..], &path, 1000).await.unwrap();
        assert_eq!(
            captured,
            Captured {
                written: 5,
                truncated: false
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        std::fs::remove_file(path).unwrap();
    }
}
