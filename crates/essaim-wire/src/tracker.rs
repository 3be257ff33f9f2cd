//! Tracker wire formats.
pub mod http;
pub mod udp;
