//! Tools for filter authors: `weft plugin new` writes a project to start from
//! ([`new`]), `weft plugin test` runs a built filter against described cases in the
//! proxy's own Wasm host ([`test_kit`], the cases file in [`cases`]).

pub mod cases;
pub mod new;
pub mod test_kit;
