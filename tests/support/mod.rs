//! Shared helpers for integration tests: a moto S3 server, a fault-injecting proxy, labelled
//! CSV bodies with an independent row count, FIFOs, reading streams to the end, and the
//! reference Python.
pub mod csv_rows;
pub mod fault_proxy;
pub mod fifo;
pub mod moto;
pub mod objects;
pub mod python;
