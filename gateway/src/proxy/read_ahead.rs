//! A socket reader that takes a burst in one system call. Both the websocket codec and TLS
//! read 4 KiB at a time, so a burst of kernel output would cost a system call per 4 KiB.
//! When a read fills the caller's buffer (a sign that more is waiting), the next read goes
//! through a larger buffer; that buffer is freed once drained or when the socket runs dry,
//! so the thousands of idle connections a gateway holds carry none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The size of one burst read.
const BURST: usize = 32 << 10;

#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read but not yet handed out: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// The last read filled the caller's buffer.
    bursting: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buffer: Vec::new(),
            start: 0,
            bursting: false,
        }
    }

    /// Hands out what is buffered; frees the buffer once it is drained.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let count = out.remaining().min(self.buffer.len() - self.start);
        out.put_slice(&self.buffer[self.start..self.start + count]);
        self.start += count;
        if self.start == self.buffer.len() {
            self.buffer = Vec::new();
            self.start = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.buffer.len() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        if !this.bursting || out.remaining() >= BURST {
            let wanted = out.remaining();
            let before = out.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, out);
            if let Poll::Ready(Ok(())) = polled {
                this.bursting = wanted > 0 && out.filled().len() - before == wanted;
            }
            return polled;
        }
        let mut burst = vec![0u8; BURST];
        let mut burst_buf = ReadBuf::new(&mut burst);
        match Pin::new(&mut this.inner).poll_read(cx, &mut burst_buf) {
            Poll::Ready(Ok(())) => {
                let read = burst_buf.filled().len();
                this.bursting = read == BURST;
                burst.truncate(read);
                this.buffer = burst;
                this.start = 0;
                if read > 0 {
                    this.drain_into(out);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                // The socket ran dry: the burst is over and its buffer goes.
                this.bursting = false;
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bursts_arrive_whole_and_in_order_and_the_buffer_is_freed() {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let mut reader = ReadAhead::new(reader);
        let sent: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
        writer.write_all(&sent).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        while received.len() < sent.len() {
            let read = reader.read(&mut chunk).await.unwrap();
            received.extend_from_slice(&chunk[..read]);
        }
        assert_eq!(received, sent);
        assert!(reader.buffer.is_empty() && reader.buffer.capacity() == 0);
        writer.write_all(b"small").await.unwrap();
        let read = reader.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..read], b"small");
        reader.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        writer.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
