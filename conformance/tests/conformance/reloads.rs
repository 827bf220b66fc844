//! What changes while the proxy serves: a config replaced through a reload, and plugins
//! replaced under traffic.

mod config;
mod plugins;
