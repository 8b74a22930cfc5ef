//! (to be written)
pub mod batch;
