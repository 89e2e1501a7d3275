//! gateway (placeholder until its crate is laid).
