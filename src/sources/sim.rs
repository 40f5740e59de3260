//! Simulated service for `aiopsd demo` (being written).
