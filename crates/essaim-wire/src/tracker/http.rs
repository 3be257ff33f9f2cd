//! HTTP tracker formats (BEP 3, BEP 23).
