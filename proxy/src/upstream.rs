//! The upstream side of a request: clusters of endpoints (`cluster`), how one is chosen
//! (`balancer`), whether it takes traffic (`health`), trying again (`retry`), how an exchange fails (`error`), where
//! endpoints come from (`resolve`), and the pooled connections that reach them (`pool`).

mod balancer;
mod cluster;
mod destination;
mod error;
mod health;
pub mod metrics;
mod pool;
mod resolve;
mod retry;
mod slot;
mod wait;

pub use cluster::{Cluster, Clusters, Endpoint};
pub use error::{Broken, UpstreamError, error_chain};
pub use pool::connect_marked;
pub use retry::ATTEMPT;
pub use slot::UpstreamSlot;
pub use wait::{SetBy, Wait};
