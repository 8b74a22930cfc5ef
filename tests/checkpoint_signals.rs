//! Real signals against `signals::install`: the first SIGTERM/SIGINT only sets the flag; a
//! second one ends the process at once with 128 + signal. Each case runs in a child copy of
//! this test binary, since handlers are process-wide.

use std::process::Command;

/// Set in the child: which scenario to play.
const CHILD_ENV: &str = "TXCAT_SIGNAL_CHILD";

fn run_child(scenario: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .output()
        .expect("run child")
}

/// The child side; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let flag = txcat::signals::install().expect("install");
    let again = txcat::signals::install().expect("install twice");
    assert!(
        std::sync::Arc::ptr_eq(&flag, &again),
        "one flag per process"
    );
    assert!(!flag.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(txcat::signals::received(), None);
    let signal = match scenario.as_str() {
        "term-once" | "term-twice" => signal_hook::consts::SIGTERM,
        _ => signal_hook::consts::SIGINT,
    };
    signal_hook::low_level::raise(signal).expect("raise");
    assert!(flag.load(std::sync::atomic::Ordering::SeqCst), "flag set");
    println!(
        "CHILD first={}",
        txcat::signals::received().unwrap_or("none")
    );
    if scenario.ends_with("twice") {
        signal_hook::low_level::raise(signal).expect("raise");
        println!("CHILD survived a second signal");
    }
}

#[test]
fn first_signal_sets_the_flag_and_the_process_goes_on() {
    for (scenario, name) in [("term-once", "SIGTERM"), ("int-once", "SIGINT")] {
        let out = run_child(scenario);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{scenario}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("CHILD first={name}")), "{stdout}");
    }
}

#[test]
fn second_signal_exits_at_once_with_128_plus_signal() {
    for (scenario, code) in [("term-twice", 143), ("int-twice", 130)] {
        let out = run_child(scenario);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{scenario}: {stdout}");
        assert!(stdout.contains("CHILD first="), "{stdout}");
        assert!(!stdout.contains("survived"), "{stdout}");
    }
}
