//! Host side of `weft:filter/context`: the request's values (see
//! [`crate::filter::context`]), moved into the store for each phase call.

use crate::wasm::bindings::ContextError;
use crate::wasm::bindings::context::Host;
use crate::wasm::state::HostState;

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.context.get(&self.shared.name, &key).map(str::to_owned))
    }

    fn get_from(&mut self, filter: String, key: String) -> wasmtime::Result<Option<String>> {
        // The host's own values, filed under a name no filter's writes can reach first.
        if filter == crate::filter::context::HOST_WRITER && key == "trace-id" {
            return Ok(self.meta.trace_id.map(|id| id.to_string()));
        }
        Ok(self.context.get(&filter, &key).map(str::to_owned))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), ContextError>> {
        if !self.in_phase {
            return Ok(Err(ContextError::NoRequest));
        }
        Ok(self
            .context
            .set(&self.shared.name, &key, &value)
            .map_err(|_| ContextError::Full))
    }
}
