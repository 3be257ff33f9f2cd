//! UDP tracker packets (BEP 15).
