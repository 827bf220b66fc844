//! A connection at rest holds its socket and a small task, nothing else: no HTTP state, no
//! buffers. Its task waits for the socket to become readable ([`ReadReady`]), and only then
//! builds the HTTP/1.1 connection (hyper's buffers, 8 KiB each way, and the box that holds
//! the request's future), which it takes apart again when the connection comes to rest
//! after a request; what hyper had read ahead is handed back ([`Rewind`]). nginx does the
//! same on its idle keep-alive connections. Measured with `bench/run --workloads idle`:
//! see bench/README.md.
//!
//! The protocol is told from the first bytes the client sends ([`sniff`]): the HTTP/2
//! connection preface, or HTTP/1.1.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::watchdog::Watched;

/// An I/O object that can say when a read would find something, without reading.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_ref();
        // Plaintext rustls already decrypted (records that came with the handshake, or
        // behind the last one read) is there to read whatever the socket says.
        if !tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        tcp.poll_read_ready(cx)
    }
}

impl<I: ReadReady> ReadReady for Watched<I> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

pin_project_lite::pin_project! {
    /// An I/O object with bytes already read from it put back in front.
    pub struct Rewind<I> {
        prefix: Option<Bytes>,
        #[pin]
        io: I,
    }
}

impl<I> Rewind<I> {
    pub fn new(io: I) -> Self {
        Rewind { prefix: None, io }
    }

    /// Puts `bytes` back in front of what is left of the prefix.
    pub fn rewind(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.prefix = Some(match self.prefix.take() {
            Some(rest) if !rest.is_empty() => [bytes, rest].concat().into(),
            _ => bytes,
        });
    }
}

impl<I: ReadReady> ReadReady for Rewind<I> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.prefix.as_ref().is_some_and(|p| !p.is_empty()) {
            return Poll::Ready(Ok(()));
        }
        self.io.poll_read_ready(cx)
    }
}

impl<I: AsyncRead> AsyncRead for Rewind<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if let Some(prefix) = this.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                *this.prefix = None;
            }
            if n > 0 {
                return Poll::Ready(Ok(()));
            }
        }
        this.io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Rewind<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// The client opened with the HTTP/2 connection preface (h2c with prior knowledge,
    /// or h2 negotiated by ALPN).
    Http2,
}

/// RFC 9113 §3.4.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes match the HTTP/2 preface or cannot, and puts them back.
/// Waits only as long as the bytes so far are a prefix of the preface: an HTTP/1.1
/// request line differs from its first byte (`PRI` is not a method anyone sends).
pub async fn sniff<I: AsyncRead + Unpin>(io: &mut Rewind<I>) -> io::Result<Protocol> {
    let mut buf = [0u8; PREFACE.len()];
    let mut filled = 0;
    let protocol = loop {
        let n = io.read(&mut buf[filled..]).await?;
        filled += n;
        if n == 0 || buf[..filled] != PREFACE[..filled] {
            break Protocol::Http1;
        }
        if filled == PREFACE.len() {
            break Protocol::Http2;
        }
    };
    io.rewind(Bytes::copy_from_slice(&buf[..filled]));
    Ok(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_tells_http2_by_its_preface_and_gives_every_byte_back() {
        let mut io = Rewind::new(&PREFACE[..]);
        assert_eq!(sniff(&mut io).await.expect("sniff"), Protocol::Http2);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("io");
        assert_eq!(all, PREFACE);

        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut io = Rewind::new(&request[..]);
        assert_eq!(sniff(&mut io).await.expect("sniff"), Protocol::Http1);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("io");
        assert_eq!(all, request);
    }

    #[tokio::test]
    async fn sniff_waits_for_a_preface_sent_in_pieces() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Rewind::new(server);
        let sniffing = tokio::spawn(async move { (sniff(&mut io).await.expect("sniff"), io) });
        use tokio::io::AsyncWriteExt;
        client.write_all(&PREFACE[..3]).await.expect("io");
        tokio::task::yield_now().await;
        client.write_all(&PREFACE[3..]).await.expect("io");
        let (protocol, mut io) = sniffing.await.expect("io");
        assert_eq!(protocol, Protocol::Http2);
        let mut back = [0u8; 24];
        io.read_exact(&mut back).await.expect("io");
        assert_eq!(&back, PREFACE);
    }

    #[tokio::test]
    async fn rewound_bytes_come_before_the_rest() {
        let mut io = Rewind::new(&b"cd"[..]);
        io.rewind(Bytes::from_static(b"b"));
        io.rewind(Bytes::from_static(b"a"));
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("io");
        assert_eq!(all, b"abcd");
    }
}
