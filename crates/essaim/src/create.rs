//! Making .torrent files.
