//! What a hostile client can and cannot do, through the real binary: the front door's
//! parsing and normalisation, and what one client can make the proxy hold.

mod connection_limits;
mod front_door;
