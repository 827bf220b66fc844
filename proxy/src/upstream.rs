//! The upstream side of a request: clusters of endpoints (`cluster`) and the pooled
//! connections that reach them (`pool`).

mod cluster;
mod pool;

pub use cluster::{Cluster, Clusters, Endpoint, UpstreamError, error_chain};
pub use pool::PooledBody;
