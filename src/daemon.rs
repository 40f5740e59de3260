//! Pipeline wiring (being written).
