//! Pods in user namespaces of their own (`hostUsers: false`, issue 30): the pod's root is an
//! unprivileged range of host IDs, image layers are ID-mapped (never chowned), files the pod
//! writes belong to its range, two pods never share one, and a setuid-root binary of an image
//! reaches only the range. Needs root, busybox-static and gcc with libc6-dev (`.ci/setup`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use crate::pods::{assert_no_leftovers, processes_mentioning, RunningPod, TestPod};
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

/// A rootfs image directory next to the manifest: a static busybox, and `extra` files.
fn busybox_image(pod: &TestPod) -> std::path::PathBuf {
    let root = pod.manifest.parent().unwrap().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    root
}

/// `0 FIRST COUNT` of a `/proc/self/uid_map` line a container printed after `prefix`.
fn mapped_range(run: &crate::pods::PodRun, container: &str, prefix: &str) -> (u64, u64, u64) {
    let line = run
        .lines_starting(container, prefix)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{container} printed no {prefix} line\n{}", run.dump()));
    let fields: Vec<u64> = line[prefix.len()..]
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    assert_eq!(fields.len(), 3, "{line}");
    (fields[0], fields[1], fields[2])
}

#[test]
fn a_pods_root_is_an_unprivileged_range_that_owns_what_it_writes() {
    require_root("a_pods_root_is_an_unprivileged_range_that_owns_what_it_writes");
    let pod = TestPod::new(
        "userns",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: userns}
spec:
  hostUsers: false
  restartPolicy: Never
  containers:
  - name: main
    image: rootfs
    command: [/bin/busybox, sh, -c]
    args:
    - |
      echo "uid_map $(/bin/busybox cat /proc/self/uid_map)"
      echo "gid_map $(/bin/busybox cat /proc/self/gid_map)"
      echo "id $(/bin/busybox id -u) $(/bin/busybox id -g)"
      echo "image-owner $(/bin/busybox stat -c %u:%g /bin/busybox)"
      echo "marker-owner $(/bin/busybox stat -c %u:%g /etc/marker)"
      /bin/busybox touch /host/made-by-root && echo wrote-host
      /bin/busybox touch /cache/made-by-root && echo "cache-owner $(/bin/busybox stat -c %u /cache/made-by-root)"
      /bin/busybox touch /etc/new-in-layer && echo wrote-layer
      /bin/busybox cat /host/root-only 2>&1 || echo read-refused
      /bin/busybox chown 0 /host/root-only 2>&1 || echo chown-refused
    volumeMounts:
    - {name: host, mountPath: /host}
    - {name: cache, mountPath: /cache}
  volumes:
  - name: host
    hostPath: {path: HOSTDIR, type: Directory}
  - name: cache
    emptyDir: {}
"#,
    );
    let dir = pod.manifest.parent().unwrap().to_path_buf();
    let host_dir = dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    // Anyone may write the directory; the root-only file is the host root's alone.
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(host_dir.join("root-only"), "host secret\n").unwrap();
    std::fs::set_permissions(
        host_dir.join("root-only"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(&pod.manifest).unwrap();
    std::fs::write(
        &pod.manifest,
        yaml.replace("HOSTDIR", &host_dir.display().to_string()),
    )
    .unwrap();
    let image = busybox_image(&pod);
    std::fs::write(image.join("etc/marker"), "x").unwrap();
    std::os::unix::fs::chown(image.join("etc/marker"), Some(33), Some(44)).unwrap();

    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());

    // The pod's 0 is an unprivileged range of 65,536 host IDs, for users and groups.
    let (inside, first, count) = mapped_range(&run, "main", "uid_map ");
    assert_eq!((inside, count), (0, 65536), "{}", run.dump());
    assert!(
        first >= 65536,
        "the pod's root is a privileged host ID: {first}"
    );
    assert_eq!(mapped_range(&run, "main", "gid_map ").2, 65536);
    run.assert_line("main", "id 0 0");
    // Image files keep their owners on disk, and the pod sees them as the image says.
    run.assert_line("main", "image-owner 0:0");
    run.assert_line("main", "marker-owner 33:44");
    let marker = std::fs::metadata(image.join("etc/marker")).unwrap();
    assert_eq!(
        (marker.uid(), marker.gid()),
        (33, 44),
        "an image file was chowned"
    );
    assert_eq!(
        std::fs::metadata(image.join("bin/busybox")).unwrap().uid(),
        0
    );
    run.assert_line("main", "wrote-layer");
    assert!(
        !image.join("etc/new-in-layer").exists(),
        "the container wrote into its image"
    );
    // What the pod's root writes belongs to the range's first ID on the host.
    run.assert_line("main", "wrote-host");
    let made = std::fs::metadata(host_dir.join("made-by-root")).unwrap();
    assert_eq!(
        (u64::from(made.uid()), u64::from(made.gid())),
        (first, mapped_range(&run, "main", "gid_map ").1),
        "a file the pod's root wrote is not its range's"
    );
    run.assert_line("main", "cache-owner 0");
    // The host's root is nobody to the pod: its root-only file stays closed, and no chown.
    run.assert_line("main", "read-refused");
    run.assert_line("main", "chown-refused");
    assert!(!run.has_line("main", "host secret"), "{}", run.dump());
    assert_no_leftovers("userns");
}

/// Two pods running at once: disjoint ranges, both away from the host's own IDs. The first
/// runs an exec hook (wpod's `__exec` joins the pod's user namespace too), the second shares
/// its PID namespace (its PID 1, the holder's, is the pod's pause user 65535).
#[test]
fn two_pods_at_once_get_disjoint_ranges() {
    require_root("two_pods_at_once_get_disjoint_ranges");
    let start = |name: &str, yaml: &str| -> (TestPod, RunningPod) {
        let pod = TestPod::new(name, yaml);
        let running = pod.spawn();
        (pod, running)
    };
    let (_a, run_a) = start(
        "userns-a",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: userns-a}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command:
    - sh
    - -c
    - |
      echo "uid_map $(cat /proc/self/uid_map)"
      until [ -s /tmp/hook-map ]; do sleep 0.1; done
      echo "hook $(cat /tmp/hook-map)"
      exec sleep 300
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, "cat /proc/self/uid_map > /tmp/hook-map.new && mv /tmp/hook-map.new /tmp/hook-map"]
"#,
    );
    let (_b, run_b) = start(
        "userns-b",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: userns-b}
spec:
  hostUsers: false
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command:
    - sh
    - -c
    - |
      echo "uid_map $(cat /proc/self/uid_map)"
      echo "pid1 $(grep Uid: /proc/1/status)"
      exec sleep 300
"#,
    );
    let seen = |running: &RunningPod| {
        let run = running.wait_for("the uid map", LONG, |r| {
            !r.lines_starting("main", "uid_map ").is_empty()
        });
        mapped_range(&run, "main", "uid_map ")
    };
    let ((_, a, a_len), (_, b, b_len)) = (seen(&run_a), seen(&run_b));
    assert!(
        a + a_len <= b || b + b_len <= a,
        "two running pods share host IDs: {a}+{a_len} and {b}+{b_len}"
    );
    // The hook ran in the container's user namespace, as the container does.
    let hooked = run_a.wait_for("the hook's uid map", LONG, |r| {
        !r.lines_starting("main", "hook ").is_empty()
    });
    assert_eq!(mapped_range(&hooked, "main", "hook "), (0, a, a_len));
    // The shared PID namespace's PID 1 is the pod's pause user, mapped like the rest.
    let paused = run_b.wait_for("PID 1's user", LONG, |r| {
        !r.lines_starting("main", "pid1 ").is_empty()
    });
    let pid1 = paused.lines_starting("main", "pid1 ").remove(0);
    let ids: Vec<&str> = pid1.split_whitespace().skip(2).collect();
    assert_eq!(ids, ["65535"; 4], "{pid1}");
    // `wpod describe` says which range a running pod holds.
    let described = crate::wpod_output(&["describe", "userns-a"]);
    let text = crate::text(&described.stdout);
    assert!(
        text.contains(&format!(
            "Users:       own namespace: IDs 0-65535 are the host's {a}-{}",
            a + 65535
        )),
        "{text}{}",
        crate::text(&described.stderr)
    );
    for running in [run_a, run_b] {
        running.signal(libc::SIGTERM);
        let run = running.wait(LONG);
        assert!(run.code.is_some(), "{}", run.dump());
    }
    assert_no_leftovers("userns-a");
    assert_no_leftovers("userns-b");
}

/// A setuid-root binary in an image, run by a non-root container user: it becomes the pod's
/// root, which is the range's first ID on the host, never the host's root.
#[test]
fn a_setuid_root_binary_of_an_image_reaches_only_the_pods_range() {
    require_root("a_setuid_root_binary_of_an_image_reaches_only_the_pods_range");
    let pod = TestPod::new(
        "userns-suid",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: userns-suid}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: rootfs
    command: [/bin/suid-probe, userns-suid-marker]
    securityContext: {runAsUser: 1000, runAsGroup: 1000, allowPrivilegeEscalation: true}
"#,
    );
    let image = busybox_image(&pod);
    let source = pod.manifest.parent().unwrap().join("suid-probe.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"euid %d uid %d\\n\", (int)geteuid(), (int)getuid()); fflush(stdout); sleep(300); return 0; }\n",
    )
    .unwrap();
    let probe = image.join("bin/suid-probe");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&probe)
        .arg(&source)
        .output()
        .expect("gcc is installed (.ci/setup)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Root's, setuid: as an image would ship it.
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let running = pod.spawn();
    let run = running.wait_for("the probe", LONG, |r| {
        !r.lines_starting("main", "euid ").is_empty()
    });
    // Inside, it worked: the pod's root.
    run.assert_line("main", "euid 0 uid 1000");
    let procs = processes_mentioning(&["userns-suid-marker"]);
    let (pid, _) = procs
        .iter()
        .find(|(_, cmd)| cmd.starts_with("/bin/suid-probe"))
        .unwrap_or_else(|| panic!("the probe process is not found: {procs:?}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (real, effective) = (ids("Uid:")[0], ids("Uid:")[1]);
    assert_ne!(
        effective, 0,
        "a setuid binary of an image reached the host's root"
    );
    assert!(
        effective >= 65536,
        "effective host ID {effective} is privileged"
    );
    assert_eq!(real, effective + 1000, "{status}");
    // And with no capability outside the pod's user namespace.
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap(),
        "the probe is in the host's user namespace"
    );
    running.signal(libc::SIGTERM);
    let run = running.wait(LONG);
    assert!(run.code.is_some(), "{}", run.dump());
    assert_no_leftovers("userns-suid");
}

/// The host's default turns it on for a pod that does not say; `hostUsers: true` keeps the
/// host's users, and a manifest that asks for both it and the host's network is refused.
#[test]
fn the_hosts_default_applies_to_pods_that_do_not_say() {
    require_root("the_hosts_default_applies_to_pods_that_do_not_say");
    let yaml = |name: &str, field: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{field}  restartPolicy: Never\n  containers:\n  - name: main\n    command: [sh, -c, 'echo \"uid_map $(cat /proc/self/uid_map)\"']\n"
        )
    };
    let mut by_default = TestPod::new("userns-default", &yaml("userns-default", ""));
    by_default
        .env
        .push(("WPOD_HOST_USERS".into(), "false".into()));
    let run = by_default.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(
        mapped_range(&run, "main", "uid_map ").1 >= 65536,
        "{}",
        run.dump()
    );

    let mut host = TestPod::new("userns-host", &yaml("userns-host", "  hostUsers: true\n"));
    host.env.push(("WPOD_HOST_USERS".into(), "false".into()));
    let run = host.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(
        mapped_range(&run, "main", "uid_map "),
        (0, 0, 4294967295),
        "hostUsers: true is the host's user namespace"
    );

    let mut wrong = TestPod::new("userns-wrong", &yaml("userns-wrong", ""));
    wrong.env.push(("WPOD_HOST_USERS".into(), "maybe".into()));
    let run = wrong.run(LONG);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("$WPOD_HOST_USERS says \"maybe\""),
        "{}",
        run.dump()
    );

    let both = TestPod::new(
        "userns-hostnet",
        &yaml(
            "userns-hostnet",
            "  hostUsers: false\n  hostNetwork: true\n",
        ),
    );
    let run = both.run(LONG);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("spec.hostUsers"), "{}", run.dump());
    for name in [
        "userns-default",
        "userns-host",
        "userns-wrong",
        "userns-hostnet",
    ] {
        assert_no_leftovers(name);
    }
}
