//! HTTP tracker server.
