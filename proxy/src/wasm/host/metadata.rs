//! Host side of `weft:filter/metadata`: the facts of the request in progress.

use crate::wasm::bindings::metadata::Host;
use crate::wasm::state::HostState;

impl Host for HostState {
    fn client_address(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.client.map(|a| a.to_string()).unwrap_or_default())
    }

    fn listener(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.listener.as_deref().unwrap_or_default().to_owned())
    }

    fn route(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.route.as_deref().unwrap_or_default().to_owned())
    }

    fn scheme(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.scheme.to_owned())
    }

    fn peer_identity(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.meta.peer.as_deref().map(str::to_owned))
    }
}
