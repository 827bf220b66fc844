//! The audit trail: what changed, when, and whether it took. One JSON object per line,
//! appended to `[admin] audit_log`: every config and plugin reload (its trigger, the old
//! and new versions, the plugins' content hashes, the outcome and the reason) and every
//! admin API call that changes something, reads the config, or is refused.
//!
//! Reads that a scraper or the status page repeat every second (`/metrics`, `/ready`,
//! the other `/api/*` views) are not recorded: they change nothing and would bury the
//! changes. Written off the request path (reloads and admin calls only).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

/// The audit log, or nothing when `[admin] audit_log` is not set.
pub struct Audit {
    file: Option<Mutex<File>>,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> Result<Audit, String> {
        let Some(path) = path else {
            return Ok(Audit { file: None });
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
        })
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
}
