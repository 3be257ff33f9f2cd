//! Peer wire protocol (BEP 3, BEP 6).
