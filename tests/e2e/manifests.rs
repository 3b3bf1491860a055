//! Manifest checks through the CLI: every bad manifest in tests/manifests/bad produces exactly
//! the errors in its `.err` file, from `validate` and from `run` alike (before anything starts);
//! every example validates. Needs nothing but the built binary and guests.

use crate::{files_with_ext, text, wpod_output};

/// Set WPOD_BLESS=1 to rewrite the `.err` files from the current output (then review the diff).
fn bless() -> bool {
    std::env::var_os("WPOD_BLESS").is_some()
}

#[test]
fn bad_manifests_report_exactly_the_expected_errors() {
    let root = wpod_test_support::repo_root();
    let mut failures = Vec::new();
    for yaml in files_with_ext("tests/manifests/bad", "yaml") {
        let expected_file = root.join(yaml.replace(".yaml", ".err"));
        let out = wpod_output(&["validate", &yaml]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{yaml}: validate must fail; stderr:\n{stderr}"
        );
        if bless() {
            std::fs::write(&expected_file, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
        if stderr != expected {
            failures.push(format!(
                "{yaml}:\n--- expected\n{expected}--- got\n{stderr}"
            ));
        }
        // `run` refuses the same file with the same words, before starting anything.
        let run = wpod_output(&["run", &yaml]);
        assert_eq!(run.status.code(), Some(1), "{yaml}: run must fail");
        assert_eq!(
            text(&run.stderr),
            expected,
            "{yaml}: run must report what validate reports"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_validates() {
    for yaml in files_with_ext("examples", "yaml") {
        let out = wpod_output(&["validate", &yaml]);
        assert!(
            out.status.success(),
            "{yaml} does not validate:\n{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("is valid"),
            "{yaml}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn validate_reports_a_missing_file_by_name() {
    let out = wpod_output(&["validate", "examples/no-such-pod.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "wpod: error: cannot read manifest examples/no-such-pod.yaml: No such file or directory (os error 2)"
    );
}

#[test]
fn inspect_lists_the_hello_guests_imports_and_their_grants() {
    let hello = wpod_test_support::sidecar("hello");
    let out = wpod_output(&["inspect", hello.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("wasi:cli/environment@0.2"), "{stdout}");
    assert!(
        stdout.contains("always granted: env, and command/args as argv"),
        "{stdout}"
    );
    assert!(stdout.contains("wasi:filesystem/preopens@0.2"), "{stdout}");
    assert!(stdout.contains("scoped by volumeMounts"), "{stdout}");
    assert!(
        !stdout.contains("wpod:sidecar/main-process"),
        "hello does not use main-process: {stdout}"
    );
    assert!(stdout.contains("exports:\n  wasi:cli/run@0.2"), "{stdout}");

    let json = wpod_output(&["inspect", "--json", hello.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("inspect --json prints JSON");
    assert!(v["imports"]
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i["grant"] == "scoped")));

    let probe = wpod_test_support::sidecar("main-probe");
    let out = wpod_output(&["inspect", probe.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "wpod:sidecar/main-process@0.2.2          needs spec.shareProcessNamespace: true"
        ),
        "{stdout}"
    );
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_component() {
    let out = wpod_output(&["inspect", "README.md"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("wpod: error: cannot load Wasm component README.md"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_reader_that_stops_early_ends_wpod_quietly_as_any_unix_tool() {
    // The reader closes the pipe at once, so wpod's first write fails: it must end as `cat`
    // would (by SIGPIPE), not panic on the closed stdout.
    let probe = wpod_test_support::sidecar("probe");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} inspect {} | (exec 0<&-; sleep 0.3)",
            crate::wpod_bin().display(),
            probe.display()
        ))
        .output()
        .expect("sh");
    let stderr = crate::text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
