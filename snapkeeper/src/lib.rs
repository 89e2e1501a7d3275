//! snapkeeper (placeholder until its crate is laid).
