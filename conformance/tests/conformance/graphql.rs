//! The first-party GraphQL plugin (`plugins/graphql`) through the real `weft` binary, in
//! front of real GraphQL services: the reference implementation (graphql-js) served by
//! graphql-http on node (`conformance/graphql/server.mjs`; `scripts/setup` installs it).
//! `users` answers the user fields, `orders` the order fields, and `reference` the whole
//! schema, so a split-and-merged answer can be compared with one service's.

mod audit;
mod env;
mod forwarded;
mod limits;
mod persisted;
mod property;
mod readme;
mod rest;
mod routing;
mod transport;
