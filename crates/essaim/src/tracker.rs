//! Tracker clients.
