//! essaim-proto
