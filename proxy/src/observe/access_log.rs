//! Access logs: one record per request, formatted and written by a thread of its own.
//!
//! A request hands its [`Entry`] over a bounded channel and never waits: when the writer
//! falls behind (a slow disk, a full pipe) the record is dropped and counted in
//! `weft_access_log_dropped_total`. Every text field comes from the client, so each is
//! escaped as it is written: a control character can neither end a line nor forge a
//! field (log injection).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::config::{ACCESS_LOG_FIELDS as FIELDS, AccessLogConfig, AccessLogFormat as Format, AccessLogPiece as Piece};

/// What one request left in the log.
pub struct Entry {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub method: http::Method,
    pub authority: String,
    pub path: String,
    pub protocol: http::Version,
    pub status: u16,
    /// Why the answer is not simply the upstream's (see `observe::flags_for`).
    pub flags: Vec<&'static str>,
    /// The filter that answered the request itself.
    pub answered_by: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub duration: Duration,
    /// From sending upstream to the upstream's response head (or its failure).
    pub upstream_duration: Option<Duration>,
    /// Time in each filter phase, in the order they ran.
    pub filters: Vec<(Arc<str>, &'static str, Duration)>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub route: Option<Arc<str>>,
    /// 32 lowercase hex digits.
    pub trace_id: Option<String>,
    /// An intercepted connection's listener direction (`inbound`, `outbound`,
    /// `unspecified`) and the address its client dialled.
    pub direction: Option<&'static str>,
    pub original_dst: Option<SocketAddr>,
}

impl Format {
    /// Appends one line for `entry` to `out`.
    pub fn write(&self, entry: &Entry, out: &mut String, clock: &mut StampCache) {
        match self {
            Format::Json => {
                out.push('{');
                for (i, name) in FIELDS.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // The keys are ours and need no escaping.
                    out.push('"');
                    out.push_str(name);
                    out.push_str("\":");
                    field(entry, i, out, true, clock);
                }
                out.push('}');
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.push_str(text),
                        Piece::Field(i) => field(entry, *i, out, false, clock),
                    }
                }
            }
        }
        out.push('\n');
    }
}

// Positions in `config::ACCESS_LOG_FIELDS` (checked by a test): a record matches on the
// index, not on the name's text.
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

/// Writes field `i` of `entry`: as a JSON value, or as escaped text (`-` when absent).
/// Straight into `out`: no field allocates.
fn field(entry: &Entry, i: usize, out: &mut String, json: bool, clock: &mut StampCache) {
    let text = |value: &str, out: &mut String| {
        if json {
            json_string(value, out)
        } else {
            escape_text(value, out)
        }
    };
    // Stamps, addresses and our own names hold no character either form escapes: they
    // go in as they are, quoted in JSON.
    let quote = |out: &mut String| {
        if json {
            out.push('"');
        }
    };
    let absent = |out: &mut String| out.push_str(if json { "null" } else { "-" });
    match i {
        TIME => {
            quote(out);
            clock.write(entry.time, out);
            quote(out);
        }
        CLIENT => {
            quote(out);
            let _ = write!(out, "{}", entry.client);
            quote(out);
        }
        LISTENER => text(&entry.listener, out),
        METHOD => text(entry.method.as_str(), out),
        AUTHORITY => text(&entry.authority, out),
        PATH => text(&entry.path, out),
        PROTOCOL => {
            quote(out);
            out.push_str(protocol(entry.protocol));
            quote(out);
        }
        STATUS => push_u64(u64::from(entry.status), out),
        FLAGS if json => {
            out.push('[');
            for (n, flag) in entry.flags.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                json_string(flag, out);
            }
            out.push(']');
        }
        FLAGS if entry.flags.is_empty() => absent(out),
        FLAGS => {
            for (n, flag) in entry.flags.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(flag);
            }
        }
        ANSWERED_BY => match &entry.answered_by {
            Some(name) => text(name, out),
            None => absent(out),
        },
        UPSTREAM | ORIGINAL_DST => {
            let addr = if i == UPSTREAM {
                entry.upstream
            } else {
                entry.original_dst
            };
            match addr {
                Some(addr) => {
                    quote(out);
                    let _ = write!(out, "{addr}");
                    quote(out);
                }
                None => absent(out),
            }
        }
        DURATION_MS => ms(entry.duration, out),
        UPSTREAM_MS => match entry.upstream_duration {
            Some(d) => ms(d, out),
            None => absent(out),
        },
        FILTER_MS => {
            out.push_str(if json { "{" } else { "" });
            for (n, (name, phase, d)) in entry.filters.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                if json {
                    // `name.phase` as one JSON string: the name escaped, the phase ours.
                    json_string(name, out);
                    out.pop();
                    out.push('.');
                    out.push_str(phase);
                    out.push_str("\":");
                } else {
                    escape_text(name, out);
                    out.push('.');
                    out.push_str(phase);
                    out.push('=');
                }
                ms(*d, out);
            }
            if json {
                out.push('}');
            } else if entry.filters.is_empty() {
                absent(out);
            }
        }
        BYTES_RECEIVED => push_u64(entry.bytes_received, out),
        BYTES_SENT => push_u64(entry.bytes_sent, out),
        ROUTE => match &entry.route {
            Some(route) => text(route, out),
            None => absent(out),
        },
        TRACE_ID => match &entry.trace_id {
            Some(id) => text(id, out),
            None => absent(out),
        },
        DIRECTION => match entry.direction {
            Some(direction) => {
                quote(out);
                out.push_str(direction);
                quote(out);
            }
            None => absent(out),
        },
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

/// A number in decimal, without `fmt`'s machinery.
fn push_u64(mut n: u64, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Milliseconds with three decimals (microsecond precision), e.g. `1.500`.
fn ms(d: Duration, out: &mut String) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    push_u64(micros / 1000, out);
    out.push('.');
    let frac = micros % 1000;
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

/// Whether a byte may go into a JSON string or a template line as it is: printable ASCII
/// but `"` and `\`. Anything else takes the slow path (escapes, or a UTF-8 sequence).
fn clean(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// A JSON string: quotes, backslashes and every control character escaped. Clean ASCII
/// (nearly every path, host and name) is copied in one go.
fn json_string(value: &str, out: &mut String) {
    out.push('"');
    if value.bytes().all(clean) {
        out.push_str(value);
    } else {
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// Text for a format-string line: control characters, `"` and `\` escaped, so a value
/// can neither end the line nor pass for a neighbouring field's quotes.
fn escape_text(value: &str, out: &mut String) {
    if value.bytes().all(clean) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `2026-11-25T19:14:07.123Z`, with the calendar part worked out once per second: records
/// come in time order, so nearly every one reuses the last second's text.
#[derive(Default)]
pub struct StampCache {
    second: Option<u64>,
    /// `2026-11-25T19:14:07.`
    prefix: String,
}

impl StampCache {
    fn write(&mut self, time: SystemTime, out: &mut String) {
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
        out.push_str(&self.prefix);
        let millis = since.subsec_millis();
        out.push(char::from(b'0' + (millis / 100) as u8));
        out.push(char::from(b'0' + (millis / 10 % 10) as u8));
        out.push(char::from(b'0' + (millis % 10) as u8));
        out.push('Z');
    }
}

/// What the writer thread is handed. Records travel unboxed: a box would be one more
/// allocation per request, for a rare flush.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(Entry),
    /// Answered once everything before it is written and flushed.
    Flush(SyncSender<()>),
}

/// Where records go, and the thread that writes them.
pub struct Sink {
    records: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Counter,
}

impl Sink {
    /// Opens the destination (so a bad path fails the config, not the first request) and
    /// starts the writer.
    pub fn start(config: &AccessLogConfig, dropped: Counter) -> Result<Sink, String> {
        let format = Format::parse(&config.format)?;
        let out = Output::open(config.path.clone())?;
        let (records, rx) = sync_channel(config.buffer);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("weft-access-log".to_owned())
            .spawn(move || write_records(rx, format, out, flag))
            .map_err(|e| format!("[access_log]: cannot start the writer thread: {e}"))?;
        Ok(Sink {
            records,
            reopen,
            dropped,
        })
    }

    /// Hands a record to the writer; drops and counts it when the writer is behind.
    pub fn send(&self, entry: Entry) {
        match self.records.try_send(Message::Record(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Waits (blocking, at most `within`) until the records handed over so far are written.
    pub fn flush(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let (done, flushed) = sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            match self.records.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = flushed.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
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

    fn write(&mut self, text: &str) -> io::Result<()> {
        match self {
            Output::Stdout(out) => out.lock().write_all(text.as_bytes()),
            Output::File { file, .. } => file.write_all(text.as_bytes()),
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

/// How long the writer lets records gather after writing a batch. A writer that blocked
/// on the channel again at once would be woken (a futex call on the worker, a context
/// switch on its core) for nearly every request under load; lingering bounds that to at
/// most 1000 / `LINGER_MS` wake-ups a second, each writing everything that came meanwhile
/// with one `write`. Idle, the writer blocks and costs nothing. At 100 000 requests a
/// second 2 ms is 200 records, well within `[access_log] buffer` (8192 by default).
const LINGER: Duration = Duration::from_millis(2);
/// A batch is written out when it grows past this, even before the channel is empty.
const BATCH_BYTES: usize = 64 << 10;

/// The writer: formats the records that came since its last turn into one batch, writes
/// it with one call and flushes, reopens the file when asked, then lingers. Ends when
/// every sender is gone (a reload replaced it).
fn write_records(records: Receiver<Message>, format: Format, mut out: Output, reopen: Arc<AtomicBool>) {
    let mut batch = String::with_capacity(BATCH_BYTES + 4096);
    let mut clock = StampCache::default();
    let mut failed = false;
    let mut waiting = Vec::new();
    loop {
        let first = match records.recv_timeout(Duration::from_millis(200)) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut result = Ok(());
        let mut wrote = false;
        for message in first.into_iter().chain(std::iter::from_fn(|| records.try_recv().ok())) {
            match message {
                Message::Record(entry) => {
                    format.write(&entry, &mut batch, &mut clock);
                    wrote = true;
                    if batch.len() >= BATCH_BYTES {
                        result = result.and(out.write(&batch));
                        batch.clear();
                    }
                }
                Message::Flush(done) => waiting.push(done),
            }
        }
        if !batch.is_empty() {
            result = result.and(out.write(&batch));
            batch.clear();
        }
        result = result.and(out.flush());
        for done in waiting.drain(..) {
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
        if reopen.swap(false, Ordering::Relaxed) {
            match out.reopen() {
                Ok(()) => tracing::info!("access log reopened"),
                Err(e) => tracing::error!(error = %e, "access log reopen failed; writing to the old file"),
            }
        }
        if wrote {
            std::thread::sleep(LINGER);
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_098_047_123),
            client: "127.0.0.1:5000".parse().expect("addr"),
            listener: "public".into(),
            method: http::Method::GET,
            authority: "example.com".to_owned(),
            path: "/a\n{\"forged\":1}\u{1b}[31m".to_owned(),
            protocol: http::Version::HTTP_11,
            status: 403,
            flags: vec!["filter_answered"],
            answered_by: Some("auth".into()),
            upstream: None,
            duration: Duration::from_micros(1500),
            upstream_duration: None,
            filters: vec![("auth".into(), "request", Duration::from_micros(250))],
            bytes_received: 0,
            bytes_sent: 10,
            route: Some("r".into()),
            trace_id: None,
            direction: Some("inbound"),
            original_dst: Some("10.0.0.2:8080".parse().expect("addr")),
        }
    }

    #[test]
    fn json_records_are_one_line_with_every_field_and_escape_control_characters() {
        let mut out = String::new();
        Format::Json.write(&entry(), &mut out, &mut StampCache::default());
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
    }

    #[test]
    fn templates_fill_fields_and_escape_what_could_forge_a_line() {
        let format =
            Format::parse("%client% \"%method% %path%\" %status% %upstream% %filter_ms% 100%%").expect("valid");
        let mut out = String::new();
        format.write(&entry(), &mut out, &mut StampCache::default());
        assert_eq!(
            out,
            "127.0.0.1:5000 \"GET /a\\x0a{\\\"forged\\\":1}\\x1b[31m\" 403 - auth.request=0.250 100%\n"
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
            let mut out = String::new();
            json_string(value, &mut out);
            assert!(
                !out.contains('\n') && !out.contains('\u{85}') && !out.contains('\u{7f}'),
                "{out:?}"
            );
            let back: String = serde_json::from_str(&out).expect("a JSON string");
            assert_eq!(back, value);
            let mut text = String::new();
            escape_text(value, &mut text);
            assert!(!text.contains(['\n', '\0', '\u{7f}', '\u{85}']), "{text:?}");
        }
    }

    #[test]
    fn stamps_and_durations_are_exact_across_seconds() {
        let mut clock = StampCache::default();
        let mut out = String::new();
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_098_047_999);
        clock.write(base, &mut out);
        out.push(' ');
        clock.write(base + Duration::from_millis(1), &mut out);
        out.push(' ');
        clock.write(base + Duration::from_millis(2), &mut out);
        assert_eq!(
            out,
            "2025-11-25T19:14:07.999Z 2025-11-25T19:14:08.000Z 2025-11-25T19:14:08.001Z"
        );
        let mut out = String::new();
        for d in [0, 1, 999, 1000, 1_500_000, 12_345_678] {
            ms(Duration::from_micros(d), &mut out);
            out.push(' ');
        }
        assert_eq!(out, "0.000 0.001 0.999 1.000 1500.000 12345.678 ");
        let mut out = String::new();
        for n in [0, 7, 10, 403, u64::MAX] {
            push_u64(n, &mut out);
            out.push(' ');
        }
        assert_eq!(out, format!("0 7 10 403 {} ", u64::MAX));
    }
}
