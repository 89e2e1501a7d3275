//! openstack (placeholder until its crate is laid).
