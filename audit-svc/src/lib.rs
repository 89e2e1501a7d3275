//! audit-svc (placeholder until its crate is laid).
