//! Shared helpers for integration tests: a moto S3 server, a fault-injecting proxy, and
//! labelled CSV bodies with an independent row count.
pub mod csv_rows;
pub mod fault_proxy;
pub mod moto;
