//! `storage::s3` through a proxy that injects 500/503 responses, resets and bodies cut off
//! mid-way: every byte still arrives exactly once; failures that never stop end the read with
//! a clear reason within a bounded time; AccessDenied is reported as such.

mod support;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fault_proxy::{every_other, flaky, Fault, FaultProxy};
use support::moto::MotoServer;
use support::objects::read_all_objects;
use txcat::storage::s3::{self, RetryPolicy, S3Options};
use txcat::storage::{ObjectStream, StorageError};

fn options(endpoint: &str, max_attempts: u32, deadline: Duration) -> S3Options {
    S3Options {
        endpoint_url: Some(endpoint.to_string()),
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            deadline,
        },
        ..S3Options::default()
    }
}

/// The stream yields exactly `objects` (key, body) of bucket `flaky`, in order, byte for byte.
fn assert_delivered_exactly(stream: Box<dyn ObjectStream + Send>, objects: &[(String, Vec<u8>)]) {
    let got = read_all_objects(stream);
    let names: Vec<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<String> = objects
        .iter()
        .map(|(key, _)| format!("s3://flaky/{key}"))
        .collect();
    assert_eq!(names, expected);
    for ((_, bytes), (key, body)) in got.iter().zip(objects) {
        assert!(
            bytes == body,
            "{key}: {} bytes, expected {}",
            bytes.len(),
            body.len()
        );
    }
}

/// Pseudo-random CSV rows, distinct per object, about `size` bytes.
fn csv_body(object: usize, size: usize) -> Vec<u8> {
    let mut body = String::from("text,label\n");
    let mut row = 0;
    while body.len() < size {
        body.push_str(&format!(
            "payment {object}-{row} ref {:08x},cat{}\n",
            (object * 7919 + row) * 2654435761 % 4294967291,
            row % 5
        ));
        row += 1;
    }
    body.into_bytes()
}

fn seed_objects(moto: &MotoServer) -> Vec<(String, Vec<u8>)> {
    let admin = moto.admin();
    admin.create_bucket("flaky");
    let objects: Vec<_> = (0..6)
        .map(|i| (format!("data/part-{i}.csv"), csv_body(i, 300_000)))
        .collect();
    for (key, body) in &objects {
        admin.put("flaky", key, body);
    }
    objects
}

#[test]
fn flaky_server_still_delivers_every_byte_exactly_once() {
    let moto = MotoServer::start();
    let objects = seed_objects(&moto);
    let proxy = FaultProxy::start(moto.port, flaky(50, 11));
    let stream = s3::open_channel(
        "train",
        "s3://flaky/data/",
        options(&proxy.endpoint, 30, Duration::from_secs(30)),
    )
    .expect("open through flaky proxy");
    assert_delivered_exactly(stream, &objects);
    // The test only proves something if faults actually happened.
    assert!(
        proxy.faults() >= 3,
        "only {} faults in {} requests",
        proxy.faults(),
        proxy.requests()
    );
}

#[test]
fn every_other_request_failing_still_delivers_every_byte_exactly_once() {
    let moto = MotoServer::start();
    let objects = seed_objects(&moto);
    let proxy = FaultProxy::start(moto.port, every_other());
    let options = S3Options {
        prefetch: 1,
        ..options(&proxy.endpoint, 10, Duration::from_secs(30))
    };
    let stream = s3::open_channel("train", "s3://flaky/data/", options).expect("open");
    assert_delivered_exactly(stream, &objects);
    assert!(
        proxy.faults() >= objects.len() as u64,
        "only {} faults in {} requests",
        proxy.faults(),
        proxy.requests()
    );
}

#[test]
fn endless_errors_give_up_with_a_clear_reason_in_bounded_time() {
    let moto = MotoServer::start();
    seed_objects(&moto);
    let proxy = FaultProxy::start(moto.port, Arc::new(|_, _: &str| Fault::SlowDown));
    let started = Instant::now();
    let err = s3::open_channel(
        "train",
        "s3://flaky/data/",
        options(&proxy.endpoint, 1000, Duration::from_secs(2)),
    )
    .err()
    .expect("must give up");
    let elapsed = started.elapsed();
    let text = err.to_string();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        text.starts_with("s3://flaky/data/: gave up after"),
        "{text}"
    );
    assert!(text.contains("503"), "{text}");
}

#[test]
fn bodies_that_always_break_fail_the_read_in_bounded_time() {
    let moto = MotoServer::start();
    seed_objects(&moto);
    // Listing works; every object download sends its headers and then hangs up.
    let plan = Arc::new(|_, line: &str| {
        if line.starts_with("GET /flaky/data/part-") {
            Fault::HeadOnly
        } else {
            Fault::Pass
        }
    });
    let proxy = FaultProxy::start(moto.port, plan);
    let mut stream = s3::open_channel(
        "train",
        "s3://flaky/data/",
        options(&proxy.endpoint, 5, Duration::from_secs(5)),
    )
    .unwrap();
    let started = Instant::now();
    let mut object = stream.next_object().unwrap().unwrap();
    let mut sink = Vec::new();
    let err = object
        .reader
        .read_to_end(&mut sink)
        .expect_err("a body that never arrives must fail");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(sink.is_empty());
    let text = err.to_string();
    assert!(
        text.starts_with("s3://flaky/data/part-0.csv: gave up after 5 attempts"),
        "{text}"
    );
}

#[test]
fn access_denied_names_the_uri_and_the_missing_permission() {
    let moto = MotoServer::start();
    seed_objects(&moto);
    let proxy = FaultProxy::start(moto.port, Arc::new(|_, _: &str| Fault::AccessDenied));
    let err = s3::open_channel(
        "train",
        "s3://flaky/data/",
        options(&proxy.endpoint, 5, Duration::from_secs(5)),
    )
    .err()
    .expect("denied");
    assert!(matches!(err, StorageError::AccessDenied { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("s3://flaky/data/") && text.contains("s3:ListBucket"),
        "{text}"
    );
}
