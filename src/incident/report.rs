//! Markdown report (being written).
