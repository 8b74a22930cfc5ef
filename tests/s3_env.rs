//! The storage entry points (`open_channel`, `download_prefix`, `upload_outputs`) configured only
//! through the environment, as in a container: `AWS_ENDPOINT_URL_S3` (read by aws-config itself)
//! selects the server and turns on path-style addressing, and the `TXCAT_S3_*` switches reach
//! the client through `Paths` (the `sagemaker` module reads them). One test per binary because
//! it sets process-wide environment variables.

mod support;

use std::io::Read;
use support::moto::{hermetic_aws_env, MotoServer};
use txcat::sagemaker::Paths;
use txcat::storage::s3::{self, S3Options};

/// The S3 options a job started now would use.
fn options() -> S3Options {
    S3Options::from_settings(&Paths::resolve(None).s3)
}

#[test]
fn environment_endpoint_override_reaches_the_server() {
    hermetic_aws_env();
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("envb");
    admin.put("envb", "data/train.csv", b"text,label\na,b\n");
    admin.put("envb", "model/config.json", b"{}");
    std::env::set_var("AWS_ENDPOINT_URL_S3", &moto.endpoint);
    std::env::set_var("TXCAT_S3_MAX_ATTEMPTS", "2");

    let mut stream = s3::open_channel("train", "s3://envb/data/", options())
        .expect("endpoint from AWS_ENDPOINT_URL_S3");
    let mut object = stream.next_object().unwrap().unwrap();
    let mut text = String::new();
    object.reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "text,label\na,b\n");

    let work = tempfile::tempdir().unwrap();
    s3::download_prefix("s3://envb/model/", &work.path().join("m"), options()).unwrap();
    assert_eq!(
        std::fs::read(work.path().join("m/config.json")).unwrap(),
        b"{}"
    );
    s3::upload_outputs(
        "s3://envb/out/",
        &work.path().join("m"),
        &work.path().join("missing"),
        options(),
    )
    .unwrap();
    let mut keys = admin.keys("envb");
    keys.sort();
    assert!(
        keys.contains(&"out/model.tar.gz".to_string())
            && keys.contains(&"out/output.tar.gz".to_string()),
        "{keys:?}"
    );

    // With the override pointing nowhere, the failure is bounded and names the URI.
    std::env::set_var("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9");
    std::env::set_var("TXCAT_S3_RETRY_SECONDS", "3");
    let err = s3::open_channel("train", "s3://envb/data/", options())
        .err()
        .expect("nothing listens on port 9");
    assert!(
        err.to_string()
            .starts_with("s3://envb/data/: gave up after 2 attempts"),
        "{err}"
    );
}
