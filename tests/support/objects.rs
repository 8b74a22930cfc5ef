//! Reading a channel stream to the end in tests.
#![allow(dead_code)]

use std::io::Read;
use txcat::storage::ObjectStream;

/// Every object a channel stream delivers, as (name, bytes), in delivery order; S3 and local
/// objects must come one by one (not concatenated like a Pipe-mode FIFO).
pub fn read_all_objects(mut stream: Box<dyn ObjectStream + Send>) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    while let Some(mut object) = stream.next_object().expect("next object") {
        assert!(!object.concatenated, "objects are delivered one by one");
        let mut bytes = Vec::new();
        object
            .reader
            .read_to_end(&mut bytes)
            .unwrap_or_else(|err| panic!("read {}: {err}", object.name));
        objects.push((object.name, bytes));
    }
    objects
}
