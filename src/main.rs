//! `txcat` entrypoint (TO BE WRITTEN, issue 2).
fn main() {}
