//! Host side of `weft:filter/log`: guest messages become `tracing` events tagged with
//! the filter's name, within the filter's log budget, control characters escaped (see
//! `output`).

use crate::wasm::bindings::Level;
use crate::wasm::bindings::log::Host;
use crate::wasm::output::escape_controls;
use crate::wasm::state::HostState;

/// A guest message longer than this is cut: a log line, not a data channel.
const MAX_MESSAGE: usize = 8 * 1024;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = message.as_str();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message = &message[..end];
        }
        let filter = &*self.shared.name;
        let tracing_level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        // A line the log level hides must not use up the budget of the lines it shows.
        if !tracing::level_enabled!(tracing_level) {
            return Ok(());
        }
        if !self.shared.log_budget.admit(filter) {
            return Ok(());
        }
        let message = escape_controls(message);
        let message = &*message;
        // `tracing` levels are static per call site, hence one arm per level.
        match level {
            Level::Trace => tracing::trace!(target: "weft::filter", filter, "{message}"),
            Level::Debug => tracing::debug!(target: "weft::filter", filter, "{message}"),
            Level::Info => tracing::info!(target: "weft::filter", filter, "{message}"),
            Level::Warn => tracing::warn!(target: "weft::filter", filter, "{message}"),
            Level::Error => tracing::error!(target: "weft::filter", filter, "{message}"),
        }
        Ok(())
    }
}
