//! The web UI for on-call engineers, served by the daemon itself.
