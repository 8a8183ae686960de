//! A socket that can hold back its output until a batch of replies is
//! complete.
//!
//! pgwire flushes after every message it sends, so one extended-protocol
//! round trip (Bind, Execute, Sync) left the server as four `send` calls:
//! BindComplete, DataRow, CommandComplete, ReadyForQuery, each waking the
//! client separately. PostgreSQL writes its replies into a buffer and
//! flushes at Sync or Flush; so does this: while `hold` is set, a flush
//! keeps the bytes, and the connection loop flushes for real after the
//! messages that end a batch. A result larger than [`HELD_BYTES_LIMIT`]
//! still streams out as it is produced.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Held output beyond this is written out even while held, so a large
/// result never waits whole in memory.
const HELD_BYTES_LIMIT: usize = 64 * 1024;

pub struct Corked<T> {
    inner: T,
    pending: Vec<u8>,
    /// Bytes of `pending` already written to `inner`.
    written: usize,
    hold: bool,
}

impl<T: AsyncWrite + Unpin> Corked<T> {
    pub fn new(inner: T) -> Self {
        Corked { inner, pending: Vec::new(), written: 0, hold: false }
    }

    /// While held, flushes keep the output (up to the limit).
    pub fn hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Write every pending byte to the inner socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corked<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corked<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= HELD_BYTES_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hold && this.pending.len() < HELD_BYTES_LIMIT {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn held_output_leaves_at_the_real_flush() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut corked = Corked::new(client);
        corked.hold(true);
        corked.write_all(b"one").await.unwrap();
        corked.flush().await.unwrap();
        corked.write_all(b"two").await.unwrap();
        corked.flush().await.unwrap();
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), server.read(&mut buf)).await;
        assert!(early.is_err(), "held bytes were sent before the real flush");
        corked.hold(false);
        corked.flush().await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"onetwo");
    }

    #[tokio::test]
    async fn large_output_streams_while_held() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut corked = Corked::new(client);
        corked.hold(true);
        let chunk = vec![7u8; 1000];
        for _ in 0..(HELD_BYTES_LIMIT / 1000 + 2) {
            corked.write_all(&chunk).await.unwrap();
            corked.flush().await.unwrap();
        }
        let mut got = vec![0u8; HELD_BYTES_LIMIT];
        server.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
        assert!(corked.pending.len() < HELD_BYTES_LIMIT, "held output grew past its limit");
    }
}
