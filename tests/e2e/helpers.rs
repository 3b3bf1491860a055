//! The pod's helper processes (holder, shims, `__exec`) run the small `wpod-helper` binary
//! installed beside `wpod`; without one of the same build, `wpod` runs them from itself and
//! says so. Needs root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pods::{assert_no_leftovers, processes_mentioning, PodRun, RunningPod, TestPod};
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

/// A pod whose exec readiness probe (`__exec`) lets its container go on: `probed` shows that
/// a shim started it and an exec helper ran inside it. It ends on SIGTERM with code 0.
fn pod(name: &str) -> TestPod {
    TestPod::new(
        name,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sh, -c, 'trap "exit 0" TERM; until [ -e /tmp/probed ]; do sleep 0.1; done; echo probed; sleep 300 & wait']
    readinessProbe:
      exec: {{command: [touch, /tmp/probed]}}
      periodSeconds: 1
"#
        ),
    )
}

/// Starts `pod` and waits for its probe to have run.
fn probed(pod: &TestPod) -> (RunningPod, PodRun) {
    let running = pod.spawn();
    let run = running.wait_for("the probe", LONG, |r| r.has_line("main", "probed"));
    (running, run)
}

/// What a process of `binary` maps: the sum of its ELF load segments' sizes (the file's own
/// size counts debug information, which is never loaded).
fn loaded_size(binary: &Path) -> u64 {
    let elf = std::fs::read(binary).unwrap();
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is not a 64-bit ELF",
        binary.display()
    );
    let le = |at: usize, n: usize| {
        elf[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b))
    };
    let (phoff, phentsize, phnum) = (le(0x20, 8) as usize, le(0x36, 2) as usize, le(0x38, 2));
    (0..phnum as usize)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| le(ph, 4) == 1) // PT_LOAD
        .map(|ph| le(ph + 0x28, 8)) // p_memsz
        .sum()
}

/// `(argv[0], the file /proc/PID/exe leads to, its loaded size)` of the pod's holder and its
/// shim.
fn helpers_of(pod: &str) -> Vec<(String, String, u64)> {
    let holders = processes_mentioning(&[&format!("__holder\0--hostname\0{pod}\0")]);
    let shims = processes_mentioning(&[&format!("/pods/{pod}/launch/main.json")]);
    assert!(!holders.is_empty(), "no holder of {pod}");
    assert!(!shims.is_empty(), "no shim of {pod}");
    holders
        .into_iter()
        .chain(shims)
        .map(|(pid, cmdline)| {
            let exe = format!("/proc/{pid}/exe");
            let target = std::fs::read_link(&exe).unwrap().display().to_string();
            let size = loaded_size(Path::new(&exe));
            let arg0 = cmdline.split(' ').next().unwrap_or_default().to_string();
            (arg0, target, size)
        })
        .collect()
}

#[test]
fn a_pods_helpers_run_the_small_helper_binary() {
    require_root("a_pods_helpers_run_the_small_helper_binary");
    let pod = pod("hp-small");
    let (running, _) = probed(&pod);
    let wpod_size = loaded_size(&crate::wpod_bin());
    for (arg0, exe, size) in helpers_of("hp-small") {
        assert_eq!(arg0, "wpod-helper");
        // Through the sealed read-only view of wpod's directory (or a sealed copy).
        assert!(
            exe == "/wpod-helper" || exe == "/memfd:wpod (deleted)",
            "a helper runs {exe}"
        );
        assert!(
            size * 4 < wpod_size,
            "the helper maps {size} bytes, not much less than wpod's {wpod_size}"
        );
    }
    let run = running.stop(LONG);
    assert!(
        !run.stderr.contains("running pod helpers from wpod itself"),
        "{}",
        run.dump()
    );
    assert_no_leftovers("hp-small");

    // Run by hand, the helper binary says what it is for and starts nothing.
    let helper = crate::wpod_bin().with_file_name("wpod-helper");
    let out = std::process::Command::new(&helper)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown helper subcommand") && err.contains("started by wpod run"),
        "{err}"
    );
}

/// `wpod` hard-linked into a directory of the test's own (the same filesystem as the build),
/// with `helper` as its `wpod-helper`, if any.
fn wpod_in(dir_name: &str, helper: Option<Vec<u8>>) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wpod = dir.join("wpod");
    std::fs::hard_link(crate::wpod_bin(), &wpod)
        .or_else(|_| std::fs::copy(crate::wpod_bin(), &wpod).map(drop))
        .unwrap();
    if let Some(helper) = helper {
        let path = dir.join("wpod-helper");
        std::fs::write(&path, helper).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    wpod
}

#[test]
fn without_a_helper_binary_of_its_build_wpod_runs_helpers_itself() {
    require_root("without_a_helper_binary_of_its_build_wpod_runs_helpers_itself");
    // The real helper with its build ID changed (wherever the ID's text is in the file: its
    // section, and the fallback copy in its data).
    let helper = std::fs::read(crate::wpod_bin().with_file_name("wpod-helper")).unwrap();
    let id = std::process::Command::new(crate::wpod_bin().with_file_name("wpod-helper"))
        .arg("--build-id")
        .output()
        .unwrap()
        .stdout;
    let id = String::from_utf8(id).unwrap().trim().to_string();
    assert!(id.starts_with("0.") && id.len() > 10, "build ID {id:?}");
    let other_id = format!(
        "{}{}",
        &id[..id.len() - 1],
        if id.ends_with('0') { '1' } else { '0' }
    );
    let mut other = helper;
    let mut changed = 0;
    let mut at = 0;
    while let Some(i) = other[at..]
        .windows(id.len())
        .position(|w| w == id.as_bytes())
    {
        other[at + i..at + i + id.len()].copy_from_slice(other_id.as_bytes());
        at += i + id.len();
        changed += 1;
    }
    assert!(changed >= 1, "the build ID is not in wpod-helper");
    // None installed; another build's; and a program that is no wpod-helper at all.
    let cases = [
        (
            "hp-alone",
            wpod_in("hp-alone", None),
            "/wpod-helper)".to_string(),
        ),
        (
            "hp-other",
            wpod_in("hp-other", Some(other)),
            format!("is from another build (\"{other_id}\", this wpod is {id})"),
        ),
        (
            "hp-echo",
            wpod_in("hp-echo", Some(std::fs::read("/bin/echo").unwrap())),
            "no .wpod_build section".to_string(),
        ),
    ];
    for (name, bin, why) in cases {
        let mut pod = pod(name);
        pod.bin = Some(bin.clone());
        let (running, _) = probed(&pod);
        for (arg0, exe, _) in helpers_of(name) {
            assert_eq!(arg0, "wpod", "{name}");
            assert!(
                exe == "/wpod" || exe == "/memfd:wpod (deleted)",
                "{name}: a helper runs {exe}"
            );
        }
        let run = running.stop(LONG);
        assert_eq!(run.code, Some(0), "{}", run.dump());
        let warned = run
            .stderr
            .lines()
            .find(|l| l.contains("running pod helpers from wpod itself"))
            .unwrap_or_else(|| panic!("{name}: no warning\n{}", run.dump()));
        assert!(warned.contains(&why), "{name}: {warned}");
        assert!(
            warned.contains("install wpod-helper beside wpod"),
            "{warned}"
        );
        assert_no_leftovers(name);
        let _ = std::fs::remove_dir_all(bin.parent().unwrap());
    }
}
