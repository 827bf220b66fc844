//! The audit trail: what changed, when, and whether it took. One JSON object per line,
//! appended to `[admin] audit_log`: every config and plugin reload (its trigger, the old
//! and new versions, the plugins' content hashes, the outcome and the reason) and every
//! admin API call that changes something, reads the config, or is refused.
//!
//! Reads that a scraper or the status page repeat every second (`/metrics`, `/ready`,
//! the other `/api/*` views) are not recorded: they change nothing and would bury the
//! changes. Written off the request path (reloads and admin calls only).
//!
//! Refused calls come from whoever can reach the listener, so they are rate-limited
//! ([`REFUSALS_PER_SECOND`], bursts of [`REFUSAL_BURST`]): a flood of bad tokens cannot
//! fill the disk. The next refusal recorded says how many were left out before it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

/// Refused admin calls recorded per second, after a burst of [`REFUSAL_BURST`].
pub const REFUSALS_PER_SECOND: f64 = 10.0;
pub const REFUSAL_BURST: f64 = 100.0;

/// The audit log, or nothing when `[admin] audit_log` is not set.
pub struct Audit {
    file: Option<Mutex<File>>,
    refusals: Mutex<Bucket>,
}

/// A token bucket for refusals, and how many it left out since the last one recorded.
struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> Result<Audit, String> {
        let refusals = Mutex::new(Bucket {
            tokens: REFUSAL_BURST,
            at: Instant::now(),
            suppressed: 0,
        });
        let Some(path) = path else {
            return Ok(Audit { file: None, refusals });
        };
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Who reloaded what is for operators, not every local user.
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            format!(
                "[admin] audit_log {}: cannot open it for appending: {e}",
                path.display()
            )
        })?;
        Ok(Audit {
            file: Some(Mutex::new(file)),
            refusals,
        })
    }

    /// Records a refused admin call, unless refusals are over their rate; the record
    /// after a gap carries `suppressed_before`, the number left out.
    pub fn refusal(&self, mut record: Value) {
        if self.file.is_none() {
            return;
        }
        let mut bucket = self.refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * REFUSALS_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(REFUSAL_BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            return;
        }
        bucket.tokens -= 1.0;
        if bucket.suppressed > 0 {
            record["suppressed_before"] = json!(std::mem::take(&mut bucket.suppressed));
        }
        drop(bucket);
        self.record(record);
    }

    /// Appends `record` (an object) with its `time` added. A failed write is logged:
    /// the change it describes has already happened.
    pub fn record(&self, mut record: Value) {
        let Some(file) = &self.file else { return };
        if let Value::Object(fields) = &mut record {
            fields.insert("time".to_owned(), json!(now_rfc3339()));
        }
        let mut line = record.to_string();
        line.push('\n');
        let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write per record: lines from two writers never interleave (O_APPEND).
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_as_json_lines_with_their_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let audit = Audit::open(Some(&path)).expect("open");
        audit.record(json!({"event": "reload", "outcome": "ok"}));
        audit.record(json!({"event": "admin", "path": "/x\ny"}));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["outcome"], "ok");
        assert_eq!(lines[1]["path"], "/x\ny", "a newline stays inside its record");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{text}");
    }

    #[test]
    fn a_flood_of_refusals_is_cut_to_the_burst_and_the_gap_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let audit = Audit::open(Some(&path)).expect("open");
        let flood = 1000;
        for i in 0..flood {
            audit.refusal(json!({"event": "admin", "status": 401, "i": i}));
        }
        // Time for one token, then one more refusal: it reports the gap.
        std::thread::sleep(std::time::Duration::from_secs_f64(1.5 / REFUSALS_PER_SECOND));
        audit.refusal(json!({"event": "admin", "status": 401, "i": flood}));
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let last = lines.last().expect("a record");
        assert!(last["suppressed_before"].as_u64().is_some(), "the gap is reported");
        assert_eq!(last["i"], flood);
        let suppressed: u64 = lines.iter().filter_map(|l| l["suppressed_before"].as_u64()).sum();
        assert_eq!(
            lines.len() as u64 + suppressed,
            flood + 1,
            "every refusal is a line or counted"
        );
        // The burst, and what refilled while the loop ran (well under a second).
        assert!(lines.len() <= REFUSAL_BURST as usize + 12, "{}", lines.len());
    }
}
