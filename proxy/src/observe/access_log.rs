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
}

impl Format {
    /// Appends one line for `entry` to `out`.
    pub fn write(&self, entry: &Entry, out: &mut String) {
        match self {
            Format::Json => {
                out.push('{');
                for (i, _) in FIELDS.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(FIELDS[i], out);
                    out.push(':');
                    field(entry, i, out, true);
                }
                out.push('}');
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.push_str(text),
                        Piece::Field(i) => field(entry, *i, out, false),
                    }
                }
            }
        }
        out.push('\n');
    }
}

/// Writes field `i` of `entry`: as a JSON value, or as escaped text (`-` when absent).
fn field(entry: &Entry, i: usize, out: &mut String, json: bool) {
    let text = |value: &str, out: &mut String| {
        if json {
            json_string(value, out)
        } else {
            escape_text(value, out)
        }
    };
    let absent = |out: &mut String| out.push_str(if json { "null" } else { "-" });
    let ms = |d: Duration, out: &mut String| {
        let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
    };
    match FIELDS[i] {
        "time" => {
            let mut stamp = String::with_capacity(24);
            rfc3339(entry.time, &mut stamp);
            text(&stamp, out);
        }
        "client" => text(&entry.client.to_string(), out),
        "listener" => text(&entry.listener, out),
        "method" => text(entry.method.as_str(), out),
        "authority" => text(&entry.authority, out),
        "path" => text(&entry.path, out),
        "protocol" => text(&format!("{:?}", entry.protocol), out),
        "status" => {
            let _ = write!(out, "{}", entry.status);
        }
        "flags" if json => {
            out.push('[');
            for (n, flag) in entry.flags.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                json_string(flag, out);
            }
            out.push(']');
        }
        "flags" if entry.flags.is_empty() => absent(out),
        "flags" => out.push_str(&entry.flags.join(",")),
        "answered_by" => match &entry.answered_by {
            Some(name) => text(name, out),
            None => absent(out),
        },
        "upstream" => match entry.upstream {
            Some(addr) => text(&addr.to_string(), out),
            None => absent(out),
        },
        "duration_ms" => ms(entry.duration, out),
        "upstream_ms" => match entry.upstream_duration {
            Some(d) => ms(d, out),
            None => absent(out),
        },
        "filter_ms" => {
            out.push_str(if json { "{" } else { "" });
            for (n, (name, phase, d)) in entry.filters.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let key = format!("{name}.{phase}");
                if json {
                    json_string(&key, out);
                    out.push(':');
                } else {
                    escape_text(&key, out);
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
        "bytes_received" => {
            let _ = write!(out, "{}", entry.bytes_received);
        }
        "bytes_sent" => {
            let _ = write!(out, "{}", entry.bytes_sent);
        }
        "route" => match &entry.route {
            Some(route) => text(route, out),
            None => absent(out),
        },
        "trace_id" => match &entry.trace_id {
            Some(id) => text(id, out),
            None => absent(out),
        },
        _ => absent(out),
    }
}

/// A JSON string: quotes, backslashes and every control character escaped.
fn json_string(value: &str, out: &mut String) {
    out.push('"');
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
    out.push('"');
}

/// Text for a format-string line: control characters, `"` and `\` escaped, so a value
/// can neither end the line nor pass for a neighbouring field's quotes.
fn escape_text(value: &str, out: &mut String) {
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

/// `2026-11-25T19:14:07.123Z`.
fn rfc3339(time: SystemTime, out: &mut String) {
    let t = time::OffsetDateTime::from(time);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
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

/// The writer: formats records as they come, flushes when the channel is empty, and
/// reopens the file when asked. Ends when every sender is gone (a reload replaced it).
fn write_records(records: Receiver<Message>, format: Format, mut out: Output, reopen: Arc<AtomicBool>) {
    let mut line = String::with_capacity(512);
    let mut failed = false;
    loop {
        let first = match records.recv_timeout(Duration::from_millis(200)) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut result = Ok(());
        let mut waiting = Vec::new();
        for message in first.into_iter().chain(std::iter::from_fn(|| records.try_recv().ok())) {
            match message {
                Message::Record(entry) => {
                    line.clear();
                    format.write(&entry, &mut line);
                    result = result.and(out.write(&line));
                }
                Message::Flush(done) => waiting.push(done),
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
        if reopen.swap(false, Ordering::Relaxed) {
            match out.reopen() {
                Ok(()) => tracing::info!("access log reopened"),
                Err(e) => tracing::error!(error = %e, "access log reopen failed; writing to the old file"),
            }
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
        }
    }

    #[test]
    fn json_records_are_one_line_with_every_field_and_escape_control_characters() {
        let mut out = String::new();
        Format::Json.write(&entry(), &mut out);
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
        for field in FIELDS {
            assert!(value.get(field).is_some(), "{field} missing from {out}");
        }
    }

    #[test]
    fn templates_fill_fields_and_escape_what_could_forge_a_line() {
        let format =
            Format::parse("%client% \"%method% %path%\" %status% %upstream% %filter_ms% 100%%").expect("valid");
        let mut out = String::new();
        format.write(&entry(), &mut out);
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
}
