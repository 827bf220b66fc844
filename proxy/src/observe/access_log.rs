//! Access logs: one record per request, formatted on the worker that served it and
//! written by a thread of its own.
//!
//! A finished request formats its record straight from a borrowed [`Entry`] into its
//! worker's buffer (one per worker, so without contention): nothing is copied into an
//! owned record, nothing crosses a channel per request. The first record into an empty
//! set of buffers wakes the writer, which lets records gather for [`LINGER`], takes every
//! worker's buffer whole and writes them, so a busy proxy wakes it at most once per
//! `LINGER`, not once per request. A request never waits: when a worker's buffer is full
//! (the writer is behind: a slow disk, a full pipe) the record is dropped and counted in
//! `weft_access_log_dropped_total`. Every text field comes from the client, so each is
//! escaped as it is written: a control character can neither end a line nor forge a
//! field (log injection).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TraceId;
use prometheus_client::metrics::counter::Counter;

use crate::config::{AccessLogConfig, AccessLogFormat as Format, AccessLogPiece as Piece};
use crate::worker::PerWorker;

/// What one request left in the log, borrowed from the request's recording: formatting
/// it copies each field once, into the log's buffer.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub listener: &'a str,
    pub method: &'a http::Method,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: http::Version,
    pub status: u16,
    /// Why the answer is not simply the upstream's (see `observe::flags_for`).
    pub flags: &'a [&'static str],
    /// The filter that answered the request itself.
    pub answered_by: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub duration: Duration,
    /// From sending upstream to the upstream's response head (or its failure).
    pub upstream_duration: Option<Duration>,
    /// Time in each filter phase, in the order they ran.
    pub filters: &'a [(Arc<str>, &'static str, Duration)],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub route: Option<&'a str>,
    /// Written as 32 lowercase hex digits.
    pub trace_id: Option<TraceId>,
    /// An intercepted connection's listener direction (`inbound`, `outbound`,
    /// `unspecified`) and the address its client dialled.
    pub direction: Option<&'static str>,
    pub original_dst: Option<SocketAddr>,
}

impl Format {
    /// Appends one line for `entry` to `out`; every byte of it valid UTF-8.
    pub fn write(&self, entry: &Entry<'_>, out: &mut Vec<u8>, memo: &mut Memo) {
        match self {
            Format::Json => json(entry, out, memo),
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                        Piece::Field(i) => field(entry, *i, out, &mut memo.clock),
                    }
                }
                out.push(b'\n');
            }
        }
    }
}

/// A JSON record, field by field in `FIELDS`' order (checked by a test): the keys and
/// the punctuation between values are literals, copied without a call.
fn json(entry: &Entry<'_>, out: &mut Vec<u8>, memo: &mut Memo) {
    out.extend_from_slice(b"{\"time\":\"");
    memo.clock.write(entry.time, out);
    out.extend_from_slice(b"\",\"client\":\"");
    memo.client.write(entry.client, out);
    out.extend_from_slice(b"\",\"listener\":");
    json_string(entry.listener, out);
    out.extend_from_slice(b",\"method\":");
    json_string(entry.method.as_str(), out);
    out.extend_from_slice(b",\"authority\":");
    json_string(entry.authority, out);
    out.extend_from_slice(b",\"path\":");
    json_string(entry.path, out);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(entry.protocol).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    push_u64(u64::from(entry.status), out);
    out.extend_from_slice(b",\"flags\":[");
    for (n, flag) in entry.flags.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        json_string(flag, out);
    }
    out.extend_from_slice(b"],\"answered_by\":");
    json_or_null(entry.answered_by, out);
    out.extend_from_slice(b",\"upstream\":");
    match entry.upstream {
        Some(addr) => {
            out.push(b'"');
            memo.upstream.write(addr, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    ms(entry.duration, out);
    out.extend_from_slice(b",\"upstream_ms\":");
    match entry.upstream_duration {
        Some(d) => ms(d, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"filter_ms\":{");
    for (n, (name, phase, d)) in entry.filters.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        // `name.phase` as one JSON string: the name escaped, the phase ours.
        json_string(name, out);
        out.pop();
        out.push(b'.');
        out.extend_from_slice(phase.as_bytes());
        out.extend_from_slice(b"\":");
        ms(*d, out);
    }
    out.extend_from_slice(b"},\"bytes_received\":");
    push_u64(entry.bytes_received, out);
    out.extend_from_slice(b",\"bytes_sent\":");
    push_u64(entry.bytes_sent, out);
    out.extend_from_slice(b",\"route\":");
    json_or_null(entry.route, out);
    out.extend_from_slice(b",\"trace_id\":");
    match entry.trace_id {
        Some(id) => {
            out.push(b'"');
            push_hex(&id.to_bytes(), out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"direction\":");
    json_or_null(entry.direction, out);
    out.extend_from_slice(b",\"original_dst\":");
    addr_or_null(entry.original_dst, out);
    out.extend_from_slice(b"}\n");
}

fn json_or_null(value: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Some(value) => json_string(value, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn addr_or_null(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    match addr {
        Some(addr) => {
            out.push(b'"');
            push_addr(addr, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

// Positions in `config::ACCESS_LOG_FIELDS` (checked by a test): a template matches on
// the index, not on the name's text.
const TIME: usize = 0;
const CLIENT: usize = 1;
const LISTENER: usize = 2;
const METHOD: usize = 3;
const AUTHORITY: usize = 4;
const PATH: usize = 5;
const PROTOCOL: usize = 6;
const STATUS: usize = 7;
const FLAGS: usize = 8;
const ANSWERED_BY: usize = 9;
const UPSTREAM: usize = 10;
const DURATION_MS: usize = 11;
const UPSTREAM_MS: usize = 12;
const FILTER_MS: usize = 13;
const BYTES_RECEIVED: usize = 14;
const BYTES_SENT: usize = 15;
const ROUTE: usize = 16;
const TRACE_ID: usize = 17;
const DIRECTION: usize = 18;
const ORIGINAL_DST: usize = 19;

/// Writes field `i` of `entry` for a template: escaped text, `-` when absent, straight
/// into `out` (no field allocates). The JSON record is `json`'s, written whole.
fn field(entry: &Entry<'_>, i: usize, out: &mut Vec<u8>, clock: &mut StampCache) {
    // Stamps, addresses, numbers and our own names hold no character to escape.
    let absent = |out: &mut Vec<u8>| out.push(b'-');
    let or_absent = |value: Option<&str>, out: &mut Vec<u8>| match value {
        Some(value) => escape_text(value, out),
        None => absent(out),
    };
    let addr_or_absent = |addr: Option<SocketAddr>, out: &mut Vec<u8>| match addr {
        Some(addr) => push_addr(addr, out),
        None => absent(out),
    };
    match i {
        TIME => clock.write(entry.time, out),
        CLIENT => push_addr(entry.client, out),
        LISTENER => escape_text(entry.listener, out),
        METHOD => escape_text(entry.method.as_str(), out),
        AUTHORITY => escape_text(entry.authority, out),
        PATH => escape_text(entry.path, out),
        PROTOCOL => out.extend_from_slice(protocol(entry.protocol).as_bytes()),
        STATUS => push_u64(u64::from(entry.status), out),
        FLAGS if entry.flags.is_empty() => absent(out),
        FLAGS => {
            for (n, flag) in entry.flags.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(flag.as_bytes());
            }
        }
        ANSWERED_BY => or_absent(entry.answered_by, out),
        UPSTREAM => addr_or_absent(entry.upstream, out),
        DURATION_MS => ms(entry.duration, out),
        UPSTREAM_MS => match entry.upstream_duration {
            Some(d) => ms(d, out),
            None => absent(out),
        },
        FILTER_MS if entry.filters.is_empty() => absent(out),
        FILTER_MS => {
            for (n, (name, phase, d)) in entry.filters.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                escape_text(name, out);
                out.push(b'.');
                out.extend_from_slice(phase.as_bytes());
                out.push(b'=');
                ms(*d, out);
            }
        }
        BYTES_RECEIVED => push_u64(entry.bytes_received, out),
        BYTES_SENT => push_u64(entry.bytes_sent, out),
        ROUTE => or_absent(entry.route, out),
        TRACE_ID => match entry.trace_id {
            Some(id) => push_hex(&id.to_bytes(), out),
            None => absent(out),
        },
        DIRECTION => or_absent(entry.direction, out),
        ORIGINAL_DST => addr_or_absent(entry.original_dst, out),
        _ => absent(out),
    }
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// `00` to `99`, two digits at a time.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `n` in decimal (`itoa`: no `core::fmt`, no allocation).
fn push_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`); IPv4 by hand, without
/// `fmt`'s machinery, which costs more than the rest of a record.
fn push_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            for (n, octet) in v4.ip().octets().into_iter().enumerate() {
                if n > 0 {
                    out.push(b'.');
                }
                push_u64(u64::from(octet), out);
            }
            out.push(b':');
            push_u64(u64::from(v4.port()), out);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Bytes as lowercase hex digits.
fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
}

/// Milliseconds with three decimals (microsecond precision), e.g. `1.500`.
fn ms(d: Duration, out: &mut Vec<u8>) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    push_u64(micros / 1000, out);
    let frac = (micros % 1000) as usize;
    let pair = frac % 100 * 2;
    out.extend_from_slice(&[b'.', b'0' + (frac / 100) as u8, PAIRS[pair], PAIRS[pair + 1]]);
}

/// Whether a byte may go into a JSON string or a template line as it is: printable ASCII
/// but `"` and `\`. Anything else takes the slow path (escapes, or a UTF-8 sequence).
fn clean(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// A character as it is, in UTF-8.
fn push_char(c: char, out: &mut Vec<u8>) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// A JSON string: quotes, backslashes and every control character escaped. Clean ASCII
/// (nearly every path, host and name) is copied in one go.
fn json_string(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    if value.bytes().all(clean) {
        out.extend_from_slice(value.as_bytes());
    } else {
        for c in value.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => push_char(c, out),
            }
        }
    }
    out.push(b'"');
}

/// Text for a format-string line: control characters, `"` and `\` escaped, so a value
/// can neither end the line nor pass for a neighbouring field's quotes.
fn escape_text(value: &str, out: &mut Vec<u8>) {
    if value.bytes().all(clean) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => push_char(c, out),
        }
    }
}

/// What a worker's records are formatted with: text that most records repeat, worked
/// out once.
#[derive(Default)]
pub struct Memo {
    clock: StampCache,
    /// The last client and upstream: a keep-alive connection's requests come one after
    /// another, and a cluster has few endpoints.
    client: AddrMemo,
    upstream: AddrMemo,
}

/// One address and its text.
#[derive(Default)]
struct AddrMemo {
    addr: Option<SocketAddr>,
    text: Vec<u8>,
}

impl AddrMemo {
    fn write(&mut self, addr: SocketAddr, out: &mut Vec<u8>) {
        if self.addr != Some(addr) {
            self.text.clear();
            push_addr(addr, &mut self.text);
            self.addr = Some(addr);
        }
        out.extend_from_slice(&self.text);
    }
}

/// `2026-11-25T19:14:07.123Z`, with the calendar part worked out once per second: records
/// come in time order, so nearly every one reuses the last second's text.
#[derive(Default)]
pub struct StampCache {
    second: Option<u64>,
    /// `2026-11-25T19:14:07.`
    prefix: Vec<u8>,
}

impl StampCache {
    fn write(&mut self, time: SystemTime, out: &mut Vec<u8>) {
        let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let t = time::OffsetDateTime::from(time);
            self.prefix.clear();
            let _ = write!(
                self.prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            );
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        let millis = since.subsec_millis() as usize;
        let pair = millis % 100 * 2;
        out.extend_from_slice(&[b'0' + (millis / 100) as u8, PAIRS[pair], PAIRS[pair + 1], b'Z']);
    }
}

/// One worker's records, waiting for the writer.
#[derive(Default)]
struct Slot {
    text: Vec<u8>,
    records: usize,
    memo: Memo,
}

/// A slot on cache lines of its own, so that workers filling theirs do not slow each other.
#[repr(align(128))]
struct Padded(Mutex<Slot>);

/// What the workers and the writer share.
struct Shared {
    format: Format,
    slots: PerWorker<Padded>,
    /// Records one slot holds at most: `[access_log] buffer`, shared out between the
    /// workers. Past it a record is dropped and counted.
    records: usize,
    /// Bytes one slot holds at most (a record is never cut, so the last one in may pass
    /// it by its own length): a flood of long paths is bounded too.
    bytes: usize,
    /// The writer has been woken (for records, a flush or a reopen) and has not yet taken
    /// the slots: a worker wakes it only when this turns true.
    pending: AtomicBool,
    reopen: AtomicBool,
    /// The sink is gone (a reload replaced it): the writer takes what is left and ends.
    closed: AtomicBool,
    /// Answered once everything handed over before them is written and flushed.
    flushes: Mutex<Vec<SyncSender<()>>>,
    dropped: Counter,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where records go, and the thread that writes them.
pub struct Sink {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
}

/// How long the writer lets records gather once woken. Waking it is a futex call on the
/// worker and a context switch on some core; lingering bounds that to at most 1000 /
/// `LINGER_MS` wake-ups a second, each writing every worker's records with one `write`
/// apiece. On an idle proxy a record is written at most this long after its request;
/// idle, the writer sleeps and costs nothing.
const LINGER: Duration = Duration::from_millis(10);
/// A slot growing past this wakes the writer before its linger is over.
const BATCH_BYTES: usize = 64 << 10;
/// The bytes a slot may hold per record it may hold.
const RECORD_BYTES: usize = 1024;
/// A written buffer larger than this (after a burst) is not kept for reuse.
const KEEP_BYTES: usize = 1 << 20;

impl Sink {
    /// Opens the destination (so a bad path fails the config, not the first request) and
    /// starts the writer.
    pub fn start(config: &AccessLogConfig, dropped: Counter) -> Result<Sink, String> {
        Sink::start_on(config, dropped, crate::worker::count())
    }

    /// [`Sink::start`] with a buffer for each of `workers` workers.
    fn start_on(config: &AccessLogConfig, dropped: Counter, workers: usize) -> Result<Sink, String> {
        let format = Format::parse(&config.format)?;
        let out = Output::open(config.path.clone())?;
        let slots = PerWorker::with_count(workers, || Padded(Mutex::new(Slot::default())));
        let records = config.buffer.div_ceil(workers.max(1)).max(1);
        let shared = Arc::new(Shared {
            format,
            slots,
            records,
            bytes: records.saturating_mul(RECORD_BYTES).max(BATCH_BYTES),
            pending: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            flushes: Mutex::new(Vec::new()),
            dropped,
        });
        let writer = std::thread::Builder::new()
            .name("weft-access-log".to_owned())
            .spawn({
                let shared = shared.clone();
                move || write_records(&shared, out)
            })
            .map_err(|e| format!("[access_log]: cannot start the writer thread: {e}"))?;
        Ok(Sink {
            shared,
            writer: writer.thread().clone(),
        })
    }

    /// Formats `entry` into the current worker's buffer, waking the writer if it sleeps;
    /// drops and counts it when the buffer is full (the writer is behind).
    pub fn send(&self, entry: &Entry<'_>) {
        let shared = &*self.shared;
        let mut slot = lock(&shared.slots.get().0);
        if slot.records >= shared.records || slot.text.len() >= shared.bytes {
            drop(slot);
            shared.dropped.inc();
            return;
        }
        let Slot { text, records, memo } = &mut *slot;
        let before = text.len();
        shared.format.write(entry, text, memo);
        *records += 1;
        let grown = before < BATCH_BYTES && text.len() >= BATCH_BYTES;
        drop(slot);
        // The writer clears `pending` before it takes the slots, and a slot's lock orders
        // that before this load: a record it missed always finds `pending` false here.
        if grown || (!shared.pending.load(Ordering::Relaxed) && !shared.pending.swap(true, Ordering::AcqRel)) {
            self.writer.unpark();
        }
    }

    /// Waits (blocking, at most `within`) until the records handed over so far are written.
    pub fn flush(&self, within: Duration) {
        let (done, flushed) = sync_channel(1);
        lock(&self.shared.flushes).push(done);
        self.wake();
        let _ = flushed.recv_timeout(within);
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        self.wake();
    }

    fn wake(&self) {
        self.shared.pending.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

impl Drop for Sink {
    /// The writer writes what the workers still hold, then ends.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

enum Output {
    Stdout(io::Stdout),
    File { path: PathBuf, file: BufWriter<File> },
}

impl Output {
    fn open(path: Option<PathBuf>) -> Result<Output, String> {
        match path {
            None => Ok(Output::Stdout(io::stdout())),
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("[access_log] cannot open {}: {e}", path.display()))?;
                Ok(Output::File {
                    path,
                    file: BufWriter::with_capacity(64 << 10, file),
                })
            }
        }
    }

    fn write(&mut self, text: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(out) => out.lock().write_all(text),
            Output::File { file, .. } => file.write_all(text),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(out) => out.lock().flush(),
            Output::File { file, .. } => file.flush(),
        }
    }

    fn reopen(&mut self) -> Result<(), String> {
        if let Output::File { path, file } = self {
            let _ = file.flush();
            let fresh = Output::open(Some(path.clone()))?;
            *self = fresh;
        }
        Ok(())
    }
}

/// The writer: sleeps until woken, lets records gather for [`LINGER`], then takes each
/// worker's buffer whole (leaving it an empty one) and writes it with one call, flushes,
/// answers flushes and reopens the file when asked. Ends when the sink is dropped (a
/// reload replaced it), after writing what was left.
fn write_records(shared: &Shared, mut out: Output) {
    let mut spare = Vec::with_capacity(BATCH_BYTES);
    let mut failed = false;
    loop {
        while !shared.pending.load(Ordering::Acquire) && !shared.closed.load(Ordering::Acquire) {
            std::thread::park();
        }
        let closing = shared.closed.load(Ordering::Acquire);
        if !closing {
            std::thread::park_timeout(LINGER);
        }
        // Before taking the slots (see `Sink::send`); the flushes waiting now are answered
        // once the records handed over before them, all in the slots, are written.
        shared.pending.store(false, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *lock(&shared.flushes));
        let mut result = Ok(());
        for slot in shared.slots.iter() {
            {
                let mut slot = lock(&slot.0);
                if slot.text.is_empty() {
                    continue;
                }
                std::mem::swap(&mut slot.text, &mut spare);
                slot.records = 0;
            }
            result = result.and(out.write(&spare));
            spare.clear();
            if spare.capacity() > KEEP_BYTES {
                spare = Vec::with_capacity(BATCH_BYTES);
            }
        }
        result = result.and(out.flush());
        for done in waiting {
            let _ = done.try_send(());
        }
        match result {
            Err(e) if !failed => {
                failed = true;
                tracing::error!(error = %e, "access log write failed; records are lost until it works again");
            }
            Err(_) => {}
            Ok(()) => failed = false,
        }
        if shared.reopen.swap(false, Ordering::Relaxed) {
            match out.reopen() {
                Ok(()) => tracing::info!("access log reopened"),
                Err(e) => tracing::error!(error = %e, "access log reopen failed; writing to the old file"),
            }
        }
        if closing {
            break;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ACCESS_LOG_FIELDS as FIELDS;

    /// What `write` leaves in a fresh buffer, as text.
    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_098_047_123),
            client: "127.0.0.1:5000".parse().expect("addr"),
            listener: "public",
            method: Box::leak(Box::new(http::Method::GET)),
            authority: "example.com",
            path: "/a\n{\"forged\":1}\u{1b}[31m",
            protocol: http::Version::HTTP_11,
            status: 403,
            flags: &["filter_answered"],
            answered_by: Some("auth"),
            upstream: None,
            duration: Duration::from_micros(1500),
            upstream_duration: None,
            filters: Box::leak(Box::new([("auth".into(), "request", Duration::from_micros(250))])),
            bytes_received: 0,
            bytes_sent: 10,
            route: Some("r"),
            trace_id: None,
            direction: Some("inbound"),
            original_dst: Some("10.0.0.2:8080".parse().expect("addr")),
        }
    }

    #[test]
    fn json_records_are_one_line_with_every_field_and_escape_control_characters() {
        let out = text(|out| Format::Json.write(&entry(), out, &mut Memo::default()));
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(
            value["path"], "/a\n{\"forged\":1}\u{1b}[31m",
            "the value survives intact"
        );
        assert_eq!(value["time"], "2025-11-25T19:14:07.123Z");
        assert_eq!(value["status"], 403);
        assert_eq!(value["flags"][0], "filter_answered");
        assert_eq!(value["filter_ms"]["auth.request"], 0.25);
        assert_eq!(value["upstream"], serde_json::Value::Null);
        assert_eq!(value["protocol"], "HTTP/1.1");
        assert_eq!(value["direction"], "inbound");
        assert_eq!(value["original_dst"], "10.0.0.2:8080");
        for field in FIELDS {
            assert!(value.get(field).is_some(), "{field} missing from {out}");
        }
        let mut traced = entry();
        traced.trace_id = Some(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"));
        traced.upstream = Some("[2001:db8::1]:443".parse().expect("addr"));
        let out = text(|out| Format::Json.write(&traced, out, &mut Memo::default()));
        let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["upstream"], "[2001:db8::1]:443");
    }

    /// Each field's JSON value, worked out from `entry` by other means (`Display`,
    /// floats, serde_json): the oracle the hand-written record is held against.
    fn expected(entry: &Entry<'_>, time: &str) -> serde_json::Value {
        let ms = |d: Duration| serde_json::json!(d.as_micros() as f64 / 1000.0);
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
        let filters: serde_json::Map<String, serde_json::Value> = entry
            .filters
            .iter()
            .map(|(name, phase, d)| (format!("{name}.{phase}"), ms(*d)))
            .collect();
        serde_json::json!({
            "time": time,
            "client": entry.client.to_string(),
            "listener": entry.listener,
            "method": entry.method.as_str(),
            "authority": entry.authority,
            "path": entry.path,
            "protocol": format!("{:?}", entry.protocol),
            "status": entry.status,
            "flags": entry.flags,
            "answered_by": entry.answered_by,
            "upstream": addr(entry.upstream),
            "duration_ms": ms(entry.duration),
            "upstream_ms": entry.upstream_duration.map(ms),
            "filter_ms": filters,
            "bytes_received": entry.bytes_received,
            "bytes_sent": entry.bytes_sent,
            "route": entry.route,
            "trace_id": entry.trace_id.map(|id| id.to_string()),
            "direction": entry.direction,
            "original_dst": addr(entry.original_dst),
        })
    }

    #[test]
    fn json_records_hold_every_field_in_order_with_its_value() {
        let mut full = entry();
        full.trace_id = Some(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"));
        full.upstream = Some("10.0.0.3:443".parse().expect("addr"));
        full.upstream_duration = Some(Duration::from_micros(1234));
        full.flags = &["refused", "too_many_headers"];
        full.answered_by = None;
        full.route = None;
        full.direction = None;
        full.original_dst = Some("[2001:db8::7]:8443".parse().expect("addr"));
        let filters = [
            ("a\"b".into(), "request", Duration::from_micros(5)),
            ("c".into(), "response", Duration::from_micros(7)),
        ];
        full.filters = &filters;
        for record in [entry(), full] {
            let out = text(|out| Format::Json.write(&record, out, &mut Memo::default()));
            let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(value, expected(&record, "2025-11-25T19:14:07.123Z"), "{out}");
            let mut last = 0;
            for name in FIELDS {
                let at = out.find(&format!("\"{name}\":")).expect("key");
                assert!(at >= last, "{name} out of order in {out}");
                last = at;
            }
            assert_eq!(value.as_object().expect("object").len(), FIELDS.len());
        }
    }

    #[test]
    fn remembered_addresses_follow_each_change() {
        let mut memo = Memo::default();
        let mut record = entry();
        for (client, upstream) in [
            ("1.2.3.4:5", "10.0.0.1:80"),
            ("1.2.3.4:5", "10.0.0.1:80"),
            ("1.2.3.4:6", "10.0.0.2:80"),
            ("[::1]:7", "10.0.0.2:80"),
            ("1.2.3.4:5", "10.0.0.1:80"),
        ] {
            record.client = client.parse().expect("addr");
            record.upstream = Some(upstream.parse().expect("addr"));
            let out = text(|out| Format::Json.write(&record, out, &mut memo));
            let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(value["client"], client);
            assert_eq!(value["upstream"], upstream);
        }
    }

    #[test]
    fn addresses_read_as_display_writes_them() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:5000",
            "255.255.255.255:65535",
            "10.20.3.4:80",
            "[::1]:8080",
        ] {
            let addr: SocketAddr = addr.parse().expect("addr");
            assert_eq!(text(|out| push_addr(addr, out)), addr.to_string());
        }
    }

    /// A sink writing into `path`, with `slots` worker slots.
    fn sink(path: &std::path::Path, buffer: usize, slots: usize) -> (Sink, Counter) {
        let dropped = Counter::default();
        let config = AccessLogConfig {
            path: Some(path.to_owned()),
            format: "json".to_owned(),
            sample: 1.0,
            buffer,
        };
        (Sink::start_on(&config, dropped.clone(), slots).expect("sink"), dropped)
    }

    /// `threads` workers each send `each` records (some with hostile paths), as fast as
    /// they can; returns the paths sent.
    fn flood(sink: &Sink, threads: usize, each: usize, long: usize) -> Vec<String> {
        std::thread::scope(|s| {
            let running: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        crate::worker::enter(t);
                        let mut sent = Vec::new();
                        for i in 0..each {
                            let mut path = format!("/w{t}/r{i}");
                            if i % 7 == 0 {
                                path.push_str("\n{\"forged\":1}\u{1b}[31m\u{2028}");
                            }
                            if i % 50 == 0 {
                                path.push_str(&"\u{1}x".repeat(long));
                            }
                            let mut record: Entry<'_> = entry();
                            record.path = path.as_str();
                            sink.send(&record);
                            sent.push(path);
                        }
                        crate::worker::enter(0);
                        sent
                    })
                })
                .collect();
            running.into_iter().flat_map(|t| t.join().expect("worker")).collect()
        })
    }

    /// The paths of the JSON records in `text`, each checked to be one whole line.
    fn paths(text: &str) -> Vec<String> {
        text.lines()
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("torn record ({e}): {line:?}"));
                assert!(
                    !line.contains(['\u{1}', '\u{1b}', '\n']),
                    "raw control character: {line:?}"
                );
                value["path"].as_str().expect("path").to_owned()
            })
            .collect()
    }

    #[test]
    fn records_from_every_worker_arrive_whole_and_once() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("access.log");
        let (sink, dropped) = sink(&log, 1 << 16, 4);
        let mut sent = flood(&sink, 4, 600, 3000);
        sink.flush(Duration::from_secs(10));
        let mut got = paths(&std::fs::read_to_string(&log).expect("log"));
        assert_eq!(dropped.get(), 0);
        got.sort();
        sent.sort();
        assert!(got == sent, "{} records written for {} sent", got.len(), sent.len());

        // Then, on an idle sink, one record is written within the linger, unasked.
        let mut record = entry();
        record.path = "/alone";
        sink.send(&record);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let took = std::time::Instant::now();
        while !std::fs::read_to_string(&log).expect("log").contains("/alone") {
            assert!(std::time::Instant::now() < deadline, "the record never came");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(took.elapsed() < Duration::from_millis(500), "{:?}", took.elapsed());
        // A dropped sink writes what its workers still hold.
        record.path = "/last";
        sink.send(&record);
        drop(sink);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&log).expect("log").contains("/last") {
            assert!(std::time::Instant::now() < deadline, "the last record was lost");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stuck_writer_drops_and_counts_what_the_buffers_cannot_hold_and_never_blocks() {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let fifo = dir.path().join("access.fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo")
                .success()
        );
        // Non-blocking (O_NONBLOCK), and not read until the end: the writer blocks once
        // the pipe is full.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000)
            .open(&fifo)
            .expect("read end");
        let (sink, dropped) = sink(&fifo, 64, 2);
        let started = std::time::Instant::now();
        let sent = flood(&sink, 2, 3000, 1000);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "senders waited on the writer: {:?}",
            started.elapsed()
        );
        assert!(dropped.get() > 0, "nothing dropped");
        // Now read: every record is either written, whole and once, or counted.
        drop(sink);
        let mut text = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "the writer never closed the pipe");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        let got = paths(&String::from_utf8(text).expect("UTF-8"));
        let unique: std::collections::HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "a record was written twice");
        assert!(got.iter().all(|p| sent.contains(p)));
        assert_eq!(
            got.len() as u64 + dropped.get(),
            sent.len() as u64,
            "a record was lost uncounted"
        );
    }

    #[test]
    fn templates_fill_fields_and_escape_what_could_forge_a_line() {
        let format =
            Format::parse("%client% \"%method% %path%\" %status% %upstream% %filter_ms% 100%%").expect("valid");
        let out = text(|out| format.write(&entry(), out, &mut Memo::default()));
        assert_eq!(
            out,
            "127.0.0.1:5000 \"GET /a\\x0a{\\\"forged\\\":1}\\x1b[31m\" 403 - auth.request=0.250 100%\n"
        );
        let every: String = FIELDS.iter().map(|f| format!("%{f}% ")).collect();
        let format = Format::parse(every.trim_end()).expect("valid");
        let out = text(|out| format.write(&entry(), out, &mut Memo::default()));
        assert_eq!(
            out,
            "2025-11-25T19:14:07.123Z 127.0.0.1:5000 public GET example.com /a\\x0a{\\\"forged\\\":1}\\x1b[31m \
             HTTP/1.1 403 filter_answered auth - 1.500 - auth.request=0.250 0 10 r - inbound 10.0.0.2:8080\n"
        );
    }

    #[test]
    fn bad_templates_name_the_problem() {
        assert!(
            Format::parse("%nope%")
                .expect_err("unknown")
                .contains("unknown field %nope%")
        );
        assert!(Format::parse("%status").expect_err("unclosed").contains("never closed"));
        assert!(
            Format::parse("plain text")
                .expect_err("no field")
                .contains("names no field")
        );
    }

    #[test]
    fn field_positions_match_the_config_list() {
        let named = [
            (TIME, "time"),
            (CLIENT, "client"),
            (LISTENER, "listener"),
            (METHOD, "method"),
            (AUTHORITY, "authority"),
            (PATH, "path"),
            (PROTOCOL, "protocol"),
            (STATUS, "status"),
            (FLAGS, "flags"),
            (ANSWERED_BY, "answered_by"),
            (UPSTREAM, "upstream"),
            (DURATION_MS, "duration_ms"),
            (UPSTREAM_MS, "upstream_ms"),
            (FILTER_MS, "filter_ms"),
            (BYTES_RECEIVED, "bytes_received"),
            (BYTES_SENT, "bytes_sent"),
            (ROUTE, "route"),
            (TRACE_ID, "trace_id"),
            (DIRECTION, "direction"),
            (ORIGINAL_DST, "original_dst"),
        ];
        assert_eq!(named.len(), FIELDS.len(), "a field was added: give it a position here");
        for (i, name) in named {
            assert_eq!(FIELDS[i], name);
        }
    }

    #[test]
    fn hostile_values_survive_json_intact_on_either_path() {
        // Clean ASCII takes the fast path; each of the others must take the slow one.
        for value in [
            "/plain/path?a=b",
            "",
            "quote\"",
            "back\\slash",
            "new\nline",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}next",
            "caf\u{e9} \u{1F600}",
            "\u{2028}line sep",
            "}\n{\"forged\":true}",
        ] {
            let out = text(|out| json_string(value, out));
            assert!(
                !out.contains('\n') && !out.contains('\u{85}') && !out.contains('\u{7f}'),
                "{out:?}"
            );
            let back: String = serde_json::from_str(&out).expect("a JSON string");
            assert_eq!(back, value);
            let text = text(|out| escape_text(value, out));
            assert!(!text.contains(['\n', '\0', '\u{7f}', '\u{85}']), "{text:?}");
        }
    }

    #[test]
    fn stamps_and_durations_are_exact_across_seconds() {
        let mut clock = StampCache::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_098_047_999);
        let out = text(|out| {
            clock.write(base, out);
            out.push(b' ');
            clock.write(base + Duration::from_millis(1), out);
            out.push(b' ');
            clock.write(base + Duration::from_millis(2), out);
        });
        assert_eq!(
            out,
            "2025-11-25T19:14:07.999Z 2025-11-25T19:14:08.000Z 2025-11-25T19:14:08.001Z"
        );
        let out = text(|out| {
            for d in [0, 1, 10, 99, 100, 999, 1000, 1_500_000, 12_345_678] {
                ms(Duration::from_micros(d), out);
                out.push(b' ');
            }
        });
        assert_eq!(out, "0.000 0.001 0.010 0.099 0.100 0.999 1.000 1500.000 12345.678 ");
        let numbers = [0, 7, 9, 10, 11, 99, 100, 101, 403, 999, 1000, 65535, u64::MAX];
        let out = text(|out| {
            for n in numbers {
                push_u64(n, out);
                out.push(b' ');
            }
        });
        let want: String = numbers.iter().map(|n| format!("{n} ")).collect();
        assert_eq!(out, want);
    }
}
