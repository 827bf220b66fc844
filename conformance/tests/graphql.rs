//! The first-party GraphQL plugin (`plugins/graphql`) through the real `weft` binary, in
//! front of real GraphQL services: the reference implementation (graphql-js) served by
//! graphql-http on node (`conformance/graphql/server.mjs`; `scripts/setup` installs it).
//! `users` answers the user fields, `orders` the order fields, and `reference` the whole
//! schema, so a split-and-merged answer can be compared with one service's.

#[path = "graphql/audit.rs"]
mod audit;
#[path = "graphql/env.rs"]
mod env;
#[path = "graphql/forwarded.rs"]
mod forwarded;
#[path = "graphql/limits.rs"]
mod limits;
#[path = "graphql/persisted.rs"]
mod persisted;
#[path = "graphql/property.rs"]
mod property;
#[path = "graphql/readme.rs"]
mod readme;
#[path = "graphql/rest.rs"]
mod rest;
#[path = "graphql/routing.rs"]
mod routing;
#[path = "graphql/transport.rs"]
mod transport;
