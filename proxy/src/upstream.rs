//! The upstream side of a request: clusters of endpoints (`cluster`), how one is chosen
//! (`balancer`), whether it takes traffic (`health`), trying again (`retry`), where
//! endpoints come from (`resolve`), and the pooled connections that reach them (`pool`).

mod balancer;
mod cluster;
mod health;
mod pool;
mod resolve;
mod retry;
mod wait;

pub use cluster::{Broken, Cluster, Clusters, Endpoint, UpstreamError, error_chain};
pub use pool::PooledBody;
pub use retry::ATTEMPT;
pub use wait::{SetBy, Wait};
