//! Extension protocol (BEP 10).
