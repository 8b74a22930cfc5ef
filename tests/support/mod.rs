//! Shared helpers for integration tests: a moto S3 server and a fault-injecting proxy.
pub mod fault_proxy;
pub mod moto;
