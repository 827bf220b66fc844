//! The guest's stdout and stderr: lines go to the proxy's log tagged with the filter's
//! name (within the filter's log budget, control characters escaped), and the last bytes
//! of stderr are kept so a trap can be reported with the panic message that preceded it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::wasm::output::escape_controls;
use crate::wasm::state::FilterShared;

/// Bytes of output kept: a panic message and its location fit comfortably.
const TAIL: usize = 1024;
/// A line longer than this is logged in pieces, so a guest cannot grow the buffer.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    tail: Vec<u8>,
}

/// One output stream of one instance. Writes never fail: a guest's `eprintln!` panics
/// when stderr reports an error, and logging must not be able to crash a filter.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    filter: Arc<FilterShared>,
    stream: &'static str,
    buffers: Arc<Mutex<Buffers>>,
}

impl GuestOutput {
    pub fn new(filter: Arc<FilterShared>, stream: &'static str) -> Self {
        GuestOutput {
            filter,
            stream,
            buffers: Arc::default(),
        }
    }

    /// The recent output (lossy UTF-8, trimmed, on one line), clearing it.
    pub fn take_tail(&self) -> String {
        let mut b = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tail = std::mem::take(&mut b.tail);
        tail.extend_from_slice(&std::mem::take(&mut b.line));
        let tail = String::from_utf8_lossy(&tail).trim().replace('\n', " | ");
        escape_controls(&tail).into_owned()
    }

    fn write(&self, data: &[u8]) {
        let mut b = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        for &byte in data {
            if byte != b'\n' {
                b.line.push(byte);
                if b.line.len() < MAX_LINE {
                    continue;
                }
            }
            let line = std::mem::take(&mut b.line);
            let filter = &*self.filter.name;
            if tracing::enabled!(tracing::Level::INFO) && self.filter.log_budget.admit(filter) {
                let text = String::from_utf8_lossy(&line);
                tracing::info!(filter, stream = self.stream, "{}", escape_controls(&text));
            }
            b.tail.extend_from_slice(&line);
            b.tail.push(b'\n');
            if b.tail.len() > TAIL {
                let excess = b.tail.len() - TAIL;
                b.tail.drain(..excess);
            }
        }
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}
