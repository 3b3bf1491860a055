//! Red-team tests for wpod's registry client and image store, against a registry that attacks
//! (`wpod_test_support::hostile_registry`): layers whose tar headers lie about their size or
//! whose links are long, bodies that never end or trickle, a pull that holds the store while it
//! waits on the network, decompression bombs and hidden trailing data, a token realm over plain
//! HTTP, a reviewed sidecar's tag repointed at a container image, and a layer deeper than the
//! descriptors wpod may hold.
//!
//! Each test bounds every wait and measures what the attack is about (time, the wpod process's
//! peak memory from `wait4`'s rusage and `/proc/PID/status`, files left in the store, requests the
//! registry saw); error messages are checked loosely (the image's name, a keyword). Every test
//! has a wpod root, registries.conf and approvals file of its own, removed when it ends. Needs
//! root; the TLS case needs openssl, the kind case busybox-static (`.ci/setup`).
//! `cargo test --test e2e redteam_registry` runs them alone.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wpod_test_support::hostile_registry::{
    container_image, sidecar_image, Conn, HostileRegistry, Image, Layer, LongNames, Request,
    Stream, Tar, Wrap, OCI_MANIFEST,
};

use crate::text;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// A wpod whose peak memory passes this is killed at once: the test has failed by then, and the
/// machine need not pay for the rest of the attack.
const KILL_AT_KIB: u64 = 1536 * 1024;

// ---- harness ----

/// A wpod root, registries.conf (the hostile registries, plain HTTP unless said otherwise),
/// accept-anything trust policy and approvals file for one test; removed when dropped.
struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(test: &str, registries: &[(&str, bool)]) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-e2e-rtreg-{test}"));
        remove_tree(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let env = Env { dir };
        let conf: String = registries
            .iter()
            .map(|(location, insecure)| {
                format!("[[registry]]\nlocation = \"{location}\"\ninsecure = {insecure}\n\n")
            })
            .collect();
        std::fs::write(env.dir.join("registries.conf"), conf).expect("registries.conf");
        std::fs::write(
            env.dir.join("policy.json"),
            r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
        )
        .expect("policy.json");
        env
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn vars(&self) -> Vec<(String, String)> {
        let p = |name: &str| self.dir.join(name).display().to_string();
        vec![
            ("WPOD_ROOT".into(), self.root().display().to_string()),
            ("WPOD_REGISTRIES_CONF".into(), p("registries.conf")),
            ("WPOD_POLICY".into(), p("policy.json")),
            ("WPOD_APPROVALS".into(), p("approvals.json")),
        ]
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::wpod_bin());
        cmd.args(args)
            .envs(self.vars())
            // Only what a test gives it: no credentials or CA bundle of the machine's.
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        cmd
    }

    /// `wpod ARGS`, killed after `limit` (or past [`KILL_AT_KIB`]).
    fn run(&self, args: &[&str], limit: Duration) -> Bounded {
        run_bounded(self.command(args), limit)
    }

    fn listing(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root().join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Unpacked layers (and staging directories) in the store.
    fn layers(&self) -> Vec<String> {
        self.listing("images/layers")
    }

    fn ingest(&self) -> Vec<String> {
        self.listing("images/ingest")
    }

    fn stored(&self) -> String {
        std::fs::read_to_string(self.root().join("images/images.json")).unwrap_or_default()
    }

    fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root()
            .join("images/layers")
            .join(chain_id.trim_start_matches("sha256:"))
    }

    fn pod(&self, name: &str, yaml: &str) -> crate::pods::TestPod {
        let mut pod = crate::pods::TestPod::new(name, yaml);
        pod.env = self.vars();
        pod
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// Removes a tree however deep (std's remove_dir_all holds a descriptor per level).
fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_err() && path.exists() {
        let _ = Command::new("rm").arg("-rf").arg(path).status();
    }
}

/// How a bounded wpod command ended.
struct Bounded {
    what: String,
    code: Option<i32>,
    took: Duration,
    /// The process's peak resident memory (KiB), from its rusage and /proc while it ran.
    peak_kib: u64,
    timed_out: bool,
    memory_killed: bool,
    stdout: String,
    stderr: String,
}

impl Bounded {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn peak_mib(&self) -> u64 {
        self.peak_kib / 1024
    }

    fn dump(&self) -> String {
        let ended = if self.timed_out {
            "KILLED: did not finish in time".to_string()
        } else if self.memory_killed {
            format!("KILLED: its memory passed {} MiB", KILL_AT_KIB / 1024)
        } else {
            format!("exit code {:?}", self.code)
        };
        format!(
            "`{}`: {ended} after {:.1}s, peak RSS {} MiB\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.took.as_secs_f64(),
            self.peak_mib(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }

    /// Whether its stderr has any of `needles` (case-insensitive).
    fn says_any(&self, needles: &[&str]) -> bool {
        let e = self.stderr.to_lowercase();
        needles.iter().any(|n| e.contains(&n.to_lowercase()))
    }
}

static OUTPUTS: AtomicU64 = AtomicU64::new(0);

fn output_files() -> (PathBuf, PathBuf) {
    let n = OUTPUTS.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("wpod-e2e-rtreg-{}-{n}", std::process::id()));
    (base.with_extension("out"), base.with_extension("err"))
}

fn read_and_remove(path: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut s);
    }
    let _ = std::fs::remove_file(path);
    text(&s)
}

/// A `VmHWM:`-style line of /proc/PID/status, in KiB.
fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `cmd` to its end, killing it after `limit` or once its memory passes [`KILL_AT_KIB`];
/// its peak RSS is the program's own high-water mark, sampled until it exits.
fn run_bounded(mut cmd: Command, limit: Duration) -> Bounded {
    let what = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let (out, err) = output_files();
    cmd.stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    let start = Instant::now();
    let child = cmd.spawn().expect("start wpod");
    let pid = child.id() as i32;
    // Reaped below by wait4 (dropping a Child neither waits nor kills).
    drop(child);
    let (mut peak, mut timed_out, mut memory_killed) = (0u64, false, false);
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 on our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if let Some(kib) = status_kib(pid, "VmHWM:") {
            peak = peak.max(kib);
        }
        if !timed_out && !memory_killed {
            let over_time = start.elapsed() > limit;
            if over_time || peak > KILL_AT_KIB {
                (timed_out, memory_killed) = (over_time, !over_time);
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Not `usage.ru_maxrss`: a forked child's high-water mark starts from its parent's (this
    // test process, which can be large while other tests run), and exec keeps it. VmHWM of the
    // exec'd program starts afresh; it is sampled above (spawn returns only after the exec).
    let _ = usage;
    Bounded {
        what,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        took: start.elapsed(),
        peak_kib: peak,
        timed_out,
        memory_killed,
        stdout: read_and_remove(&out),
        stderr: read_and_remove(&err),
    }
}

/// A wpod command left running in the background; killed (SIGKILL) and reaped when dropped.
struct Background {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    fn spawn(mut cmd: Command) -> Self {
        let (out, err) = output_files();
        let child = cmd
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start wpod");
        Background {
            child: Some(child),
            out,
            err,
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read(&self.out), read(&self.err))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

/// A small container image with one gzip layer holding `etc/NAME`.
fn small_image(name: &str) -> Image {
    let tar = Tar::new()
        .dir("etc")
        .file(&format!("etc/{name}"), name.as_bytes())
        .finish();
    container_image(&[Layer::gzip(&tar)], &["/bin/true"], &[])
}

/// `n` bytes that do not compress (xorshift), so a blob's size is what it is on the wire.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A PAX `x` header of exactly `total` bytes of valid records (one giant comment), its data
/// and padding, then a member it describes.
fn giant_pax(total: u64) -> Tar {
    let head = format!("{total} comment=");
    Tar::new()
        .raw_header(b'x', b"PaxHeaders/after", b"", total)
        .bytes(head.as_bytes())
        .repeat(b'a', total - head.len() as u64 - 1)
        .bytes(b"\n")
        .pad()
        .file("after", b"x")
}

/// A GNU long name (`L`) of `total` bytes, its data and padding, then the member it names.
fn giant_long_name(total: u64) -> Tar {
    Tar::new()
        .raw_header(b'L', b"././@LongLink", b"", total)
        .repeat(b'a', total - 1)
        .bytes(b"\0")
        .pad()
        .file("after", b"x")
}

// ---- finding 4: extension headers ----

#[test]
fn f4_extension_headers_claiming_512_mib_are_refused_before_they_are_read() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f4", &[(&reg.addr(), true)]);
    let claimed = 512 * MIB;
    // The 512 MiB really follow each header (as RLE zstd, a few kilobytes on the wire): a
    // reader that trusts the size reads and keeps all of it.
    let cases = [
        ("gnu-long-name", giant_long_name(claimed)),
        ("pax-header", giant_pax(claimed)),
    ];
    let mut failures = Vec::new();
    for (case, tar) in cases {
        let layer = Layer::zstd(&tar.finish());
        let repo = format!("f4/{case}");
        reg.push(&repo, "1", &container_image(&[layer], &["/after"], &[]));
        let image = format!("{}/{repo}:1", reg.addr());
        let out = env.run(&["pull", &image], Duration::from_secs(60));
        let mut wrong = Vec::new();
        if out.ok() {
            wrong.push("the pull succeeded".to_string());
        }
        if out.timed_out || out.took > Duration::from_secs(30) {
            wrong.push("it did not fail fast (30 s)".into());
        }
        if out.peak_kib >= 100 * 1024 {
            wrong.push(format!(
                "peak RSS {} MiB: the header's data was read into memory (limit 100 MiB)",
                out.peak_mib()
            ));
        }
        if !out.stderr.contains(&repo) || !out.says_any(&["header", "extension"]) {
            wrong.push("the error does not name both the image and the header".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{case}: {}\n{}", wrong.join("; "), out.dump()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(env.layers().is_empty(), "layers left: {:?}", env.layers());
}

// ---- finding 5: long link targets ----

#[test]
fn f5_symlinks_and_hard_links_with_300_byte_targets_keep_their_full_target() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f5", &[(&reg.addr(), true)]);
    // A file at a 300-byte path; links to it through GNU `K` headers and PAX `linkpath`.
    let target = format!("{}/{}", "a".repeat(150), "b".repeat(149));
    assert_eq!(target.len(), 300);
    let tar = Tar::new()
        .file(&target, b"the target\n")
        .symlink("sym-gnu", &target)
        .hardlink("hard-gnu", &target)
        .long_names(LongNames::Pax)
        .symlink("sym-pax", &target)
        .hardlink("hard-pax", &target)
        .finish();
    let layer = Layer::gzip(&tar);
    let chain_id = layer.diff_id.clone();
    reg.push(
        "f5/links",
        "1",
        &container_image(&[layer], &["/bin/true"], &[]),
    );
    let image = format!("{}/f5/links:1", reg.addr());
    let out = env.run(&["pull", &image], Duration::from_secs(60));
    assert!(out.ok(), "{}", out.dump());
    let dir = env.layer_dir(&chain_id);
    assert!(
        dir.is_dir(),
        "no layer {}: {:?}",
        dir.display(),
        env.layers()
    );
    let file = std::fs::symlink_metadata(dir.join(&target)).expect("the 300-byte path");
    let mut failures = Vec::new();
    for sym in ["sym-gnu", "sym-pax"] {
        match std::fs::read_link(dir.join(sym)) {
            Ok(t) if t == Path::new(&target) => {}
            Ok(t) => failures.push(format!(
                "{sym} -> {} ({} bytes), not the 300-byte target",
                t.display(),
                t.as_os_str().len()
            )),
            Err(e) => failures.push(format!("{sym}: {e}")),
        }
    }
    for hard in ["hard-gnu", "hard-pax"] {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(dir.join(hard)) {
            Ok(m) if m.ino() == file.ino() => {}
            Ok(_) => failures.push(format!("{hard} is not a hard link to the target")),
            Err(e) => failures.push(format!("{hard}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        out.dump()
    );
}

// ---- finding 6: endless and trickling bodies ----

#[test]
fn f6_endless_manifests_tag_lists_and_catalogs_fail_within_a_minute_in_bounded_memory() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f6-endless", &[(&reg.addr(), true)]);
    let addr = reg.addr();
    let limit = Duration::from_secs(60);
    let mut failures = Vec::new();
    let mut check = |case: &str, out: Bounded, must_fail: bool, names: &str| {
        let mut wrong = Vec::new();
        if out.timed_out {
            wrong.push("it did not end within 60 s".to_string());
        }
        if out.peak_kib >= 200 * 1024 {
            wrong.push(format!("peak RSS {} MiB (limit 200 MiB)", out.peak_mib()));
        }
        if must_fail && out.ok() {
            wrong.push("it succeeded".into());
        }
        if !out.stderr.contains(names) {
            wrong.push(format!("stderr does not name {names}"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{case}: {}\n{}", wrong.join("; "), out.dump()));
        }
    };

    reg.endless_manifest("f6/endless-manifest", "1");
    let image = format!("{addr}/f6/endless-manifest:1");
    check(
        "endless manifest, wpod pull",
        env.run(&["pull", &image], limit),
        true,
        "f6/endless-manifest",
    );
    check(
        "endless manifest, wpod inspect",
        env.run(&["inspect", &image], limit),
        true,
        "f6/endless-manifest",
    );

    // A catalog of one repository whose tag list never ends: search skips it (with a warning
    // naming it) or fails, either way soon and small.
    reg.set_catalog(&["f6/endless-tags"]);
    reg.endless_tags("f6/endless-tags");
    check(
        "endless tag list, wpod search",
        env.run(&["search", &format!("{addr}/endless")], limit),
        false,
        "f6/endless-tags",
    );

    reg.endless_catalog();
    check(
        "endless catalog, wpod search",
        env.run(&["search", &format!("{addr}/anything")], limit),
        true,
        "catalog",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Each was asked for: the attacks were met, not skipped.
    for path in [
        "/v2/f6/endless-manifest/manifests/1",
        "/v2/f6/endless-tags/tags/list",
        "/v2/_catalog",
    ] {
        assert!(
            !reg.requests_to(path).is_empty(),
            "wpod never asked for {path}:\n{}",
            reg.log()
        );
    }
}

#[test]
fn f6_a_manifest_trickling_one_byte_every_two_seconds_fails_by_a_deadline() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f6-slow", &[(&reg.addr(), true)]);
    // 50 KB at one byte every 2 s: a day; a per-read timeout never fires.
    let mut body = b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"layers\":[".to_vec();
    body.resize(50_000, b' ');
    reg.slow(
        "/v2/f6/slow/manifests/1",
        OCI_MANIFEST,
        body,
        Duration::from_secs(2),
    );
    let out = env.run(
        &["pull", &format!("{}/f6/slow:1", reg.addr())],
        Duration::from_secs(95),
    );
    assert!(
        !out.timed_out,
        "the pull hung on a trickling manifest (no overall deadline):\n{}",
        out.dump()
    );
    assert!(!out.ok(), "{}", out.dump());
    assert!(out.stderr.contains("f6/slow"), "{}", out.dump());
    assert!(
        !reg.requests_to("/v2/f6/slow/manifests/").is_empty(),
        "wpod never asked for the manifest:\n{}\n{}",
        reg.log(),
        out.dump()
    );
}

// ---- finding 7: the store is not held across network I/O ----

#[test]
fn f7_a_pull_stuck_on_a_slow_registry_does_not_block_other_pulls_or_the_store() {
    wpod_test_support::require_root("registry red-team tests");
    let slow = HostileRegistry::start();
    let good = HostileRegistry::start();
    let env = Env::new("f7", &[(&slow.addr(), true), (&good.addr(), true)]);
    // A 64 KiB layer sent one byte every 500 ms: nine hours.
    let tar = Tar::new().file("blob", &noise(64 << 10)).finish();
    let layer = Layer::plain(&tar);
    let layer_path = format!("/v2/f7/stuck/blobs/{}", layer.digest);
    slow.push(
        "f7/stuck",
        "1",
        &container_image(std::slice::from_ref(&layer), &["/bin/true"], &[]),
    );
    slow.slow(
        &layer_path,
        "application/octet-stream",
        layer.blob.clone(),
        Duration::from_millis(500),
    );
    good.push("f7/good", "1", &small_image("good"));

    let mut stuck =
        Background::spawn(env.command(&["pull", &format!("{}/f7/stuck:1", slow.addr())]));
    let asked = slow.wait_for_request(Duration::from_secs(30), |r| r.path() == layer_path);
    assert!(
        asked.is_some(),
        "the slow pull never reached its layer:\n{}\n{}",
        slow.log(),
        stuck.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        stuck.running(),
        "the slow pull ended early (the test needs it stuck):\n{}",
        stuck.output()
    );

    let prompt = Duration::from_secs(15);
    let other = env.run(&["pull", &format!("{}/f7/good:1", good.addr())], prompt);
    assert!(
        other.ok(),
        "a pull from a good registry waited on the stuck one:\n{}",
        other.dump()
    );
    let listed = env.run(&["images"], prompt);
    assert!(listed.ok(), "{}", listed.dump());
    assert!(listed.stdout.contains("f7/good"), "{}", listed.dump());
    let pruned = env.run(&["image", "prune"], prompt);
    assert!(
        pruned.ok(),
        "prune waited on the stuck pull:\n{}",
        pruned.dump()
    );
    assert!(
        stuck.running(),
        "the stuck pull ended while the other commands ran, so they may not have met it stuck \
         (its blob deadline must outlast them: at least 15 s):\n{}",
        stuck.output()
    );
    stuck.kill();
}

// ---- finding 14: expansion, trailing data, killed downloads ----

#[test]
fn f14_bombs_and_trailing_data_are_refused_and_leave_nothing() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f14-layers", &[(&reg.addr(), true)]);
    let small = || Tar::new().dir("etc").file("etc/hello", b"hi\n");

    // Control: the 10 KiB of zero padding GNU tar writes is accepted.
    let mut padded = small().finish();
    padded.repeat(0, 10 << 10);
    reg.push(
        "f14/padded",
        "1",
        &container_image(&[Layer::gzip(&padded)], &["/bin/true"], &[]),
    );
    let out = env.run(
        &["pull", &format!("{}/f14/padded:1", reg.addr())],
        Duration::from_secs(60),
    );
    assert!(
        out.ok(),
        "an ordinary padded layer was refused:\n{}",
        out.dump()
    );

    let expands: &[&str] = &["decompress", "expand"];
    let trailing: &[&str] = &["trailing", "after the archive", "padding"];
    let mut cases: Vec<(&str, Stream, bool, &[&str])> = Vec::new();
    // 35 KB of zstd that decompresses to 1 GiB + 64 MiB (the bound: 1100x, at least 1 GiB).
    let bomb = Tar::new().file_repeat("zeros", 0, GIB + 64 * MIB).finish();
    cases.push(("zstd-bomb", bomb, true, expands));
    let mut hidden = small().finish();
    hidden.bytes(b"data hidden after the end of the archive");
    cases.push(("trailing-data", hidden, false, trailing));
    let mut zeros = small().finish();
    zeros.repeat(0, 20 * MIB);
    cases.push(("trailing-zeros", zeros, false, trailing));

    let mut failures = Vec::new();
    for (case, stream, zstd, keywords) in cases {
        let layer = if zstd {
            Layer::zstd(&stream)
        } else {
            Layer::gzip(&stream)
        };
        let repo = format!("f14/{case}");
        let blob_kib = layer.blob.len() / 1024;
        // The config names the layer's true digest: only the limits can refuse it.
        reg.push(&repo, "1", &container_image(&[layer], &["/bin/true"], &[]));
        let out = env.run(
            &["pull", &format!("{}/{repo}:1", reg.addr())],
            Duration::from_secs(120),
        );
        let mut wrong = Vec::new();
        if out.ok() {
            wrong.push(format!(
                "accepted ({blob_kib} KiB blob, {} MiB stream)",
                stream.len() / MIB
            ));
        }
        if out.timed_out {
            wrong.push("did not end within 120 s".into());
        }
        if out.peak_kib >= 200 * 1024 {
            wrong.push(format!("peak RSS {} MiB", out.peak_mib()));
        }
        let named = out.stderr.contains(&repo) && out.says_any(keywords);
        if !(out.ok() || named) {
            wrong.push(format!(
                "the error does not name both the image and one of {keywords:?}"
            ));
        }
        if env.stored().contains(&repo) {
            wrong.push("it was recorded".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{case}: {}\n{}", wrong.join("; "), out.dump()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Only the control's layer is stored; nothing half-unpacked is left.
    assert_eq!(env.layers().len(), 1, "{:?}", env.layers());
    assert!(env.ingest().is_empty(), "{:?}", env.ingest());
}

/// Whether process `pid` holds a file of a store's ingest with bytes in it: a download under
/// way (its file is unnamed, O_TMPFILE, so only the process's descriptors show it).
fn ingesting(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().contains("/images/ingest/"))
                && std::fs::metadata(fd.path()).is_ok_and(|m| m.len() > 0)
        })
}

#[test]
fn f14_a_pull_killed_mid_download_leaves_nothing_in_ingest() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f14-killed", &[(&reg.addr(), true)]);
    let tar = Tar::new().file("blob", &noise(1 << 20)).finish();
    let layer = Layer::plain(&tar);
    let layer_path = format!("/v2/f14/killed/blobs/{}", layer.digest);
    reg.push(
        "f14/killed",
        "1",
        &container_image(std::slice::from_ref(&layer), &["/bin/true"], &[]),
    );
    reg.slow(
        &layer_path,
        "application/octet-stream",
        layer.blob.clone(),
        Duration::from_millis(20),
    );
    let mut pull =
        Background::spawn(env.command(&["pull", &format!("{}/f14/killed:1", reg.addr())]));
    let asked = reg.wait_for_request(Duration::from_secs(30), |r| r.path() == layer_path);
    assert!(
        asked.is_some(),
        "the pull never reached its layer:\n{}\n{}",
        reg.log(),
        pull.output()
    );
    // Some of the layer's bytes are on their way into the store.
    let pid = pull.child.as_ref().expect("the pull").id();
    let start = Instant::now();
    while !ingesting(pid) && pull.running() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pull.running(), "the pull ended early:\n{}", pull.output());
    assert!(
        ingesting(pid),
        "the pull wrote nothing into ingest:\n{}",
        pull.output()
    );
    pull.kill();

    let listed = env.run(&["images"], Duration::from_secs(15));
    assert!(listed.ok(), "{}", listed.dump());
    assert!(
        env.ingest().is_empty(),
        "a killed pull's partial download outlived it (still there after `wpod images`): {:?}",
        env.ingest()
    );
    let pruned = env.run(&["image", "prune"], Duration::from_secs(15));
    assert!(pruned.ok(), "{}", pruned.dump());
    assert!(env.ingest().is_empty(), "{:?}", env.ingest());
    assert!(
        env.layers().iter().all(|l| !l.starts_with(".tmp-")),
        "{:?}",
        env.layers()
    );
    assert!(!env.stored().contains("f14/killed"), "{}", env.stored());
}

// ---- finding 15: credentials and the token realm ----

/// A CA and a certificate for 127.0.0.1 it signed (openssl), for a registry that speaks TLS.
struct TestCa(wpod_test_support::tlsca::TestCa);

impl TestCa {
    fn new(dir: &Path) -> Self {
        TestCa(wpod_test_support::tlsca::TestCa::new(
            dir,
            &["IP:127.0.0.1", "DNS:localhost"],
        ))
    }

    /// The CA bundle a client is told to trust (`SSL_CERT_FILE`).
    fn bundle(&self) -> PathBuf {
        self.0.bundle()
    }

    /// Makes each accepted connection a TLS server session with the leaf certificate.
    fn wrap(&self) -> Wrap {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_file(self.0.leaf_cert()).expect("leaf.crt")];
        let key = PrivateKeyDer::from_pem_file(self.0.leaf_key()).expect("leaf.key");
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the leaf certificate"),
        );
        Box::new(move |mut tcp: std::net::TcpStream| {
            let mut conn =
                rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
            tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp)?;
            }
            tcp.set_read_timeout(Some(Duration::from_millis(100)))?;
            tcp.set_write_timeout(Some(Duration::from_millis(100)))?;
            Ok(Box::new(rustls::StreamOwned::new(conn, tcp)) as Box<dyn Conn>)
        })
    }
}

#[test]
fn f15_credentials_never_go_to_a_plain_http_token_realm_of_an_https_registry() {
    wpod_test_support::require_root("registry red-team tests");
    // The registry speaks HTTPS (registries.conf: insecure = false) and wants a token; the realm
    // it names is plain HTTP on another port. The rule: Basic credentials go to an https realm,
    // or to a plain-HTTP one only when the registry itself is configured insecure.
    let scratch = Env::new("f15-ca", &[]);
    let ca = TestCa::new(&scratch.dir.join("ca"));
    let registry = HostileRegistry::start_with(ca.wrap());
    let realm_host = HostileRegistry::start();
    realm_host.serve_token();
    registry.push("f15/app", "1", &small_image("app"));
    let env = Env::new("f15", &[(&registry.addr(), false)]);
    let (user, password) = ("wpod-user", "s3cret-pw-f15");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auth_file = env.dir.join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{basic}"}}}}}}"#,
            registry.addr()
        ),
    )
    .expect("auth.json");
    let image = format!("{}/f15/app:1", registry.addr());
    let pull = || {
        let mut cmd = env.command(&["pull", &image]);
        cmd.env("SSL_CERT_FILE", ca.bundle())
            .env("REGISTRY_AUTH_FILE", &auth_file);
        run_bounded(cmd, Duration::from_secs(60))
    };

    // Control: a realm on the registry itself, over HTTPS, gets the credentials and the pull
    // works (this also shows the TLS staging and the auth file reach wpod).
    registry.require_token(None);
    let out = pull();
    assert!(
        out.ok(),
        "control (https realm) failed, so the test cannot stage the attack:\n{}\nregistry saw:\n{}",
        out.dump(),
        registry.log()
    );
    let sent_basic = |r: &Request| {
        r.header("authorization")
            .is_some_and(|a| a.to_ascii_lowercase().starts_with("basic"))
    };
    assert!(
        registry
            .requests_to("/token")
            .iter()
            .any(|r| { r.header("authorization") == Some(format!("Basic {basic}").as_str()) }),
        "control: the https realm never received the credentials:\n{}",
        registry.log()
    );

    // The attack: the same registry names a plain-HTTP realm.
    let before = registry.requests().len();
    registry.require_token(Some(&format!("{}/token", realm_host.base_url())));
    let out = pull();
    assert!(!out.timed_out, "{}", out.dump());
    assert!(
        registry.requests().len() > before,
        "wpod never reached the registry:\n{}",
        out.dump()
    );
    let leaked: Vec<String> = realm_host
        .requests()
        .iter()
        .filter(|r| {
            sent_basic(r)
                || r.target.contains(password)
                || r.headers
                    .iter()
                    .any(|(_, v)| v.contains(&basic) || v.contains(password))
        })
        .map(|r| format!("{} {} {:?}", r.method, r.target, r.headers))
        .collect();
    assert!(
        leaked.is_empty(),
        "the credentials for {} went to the plain-HTTP realm {}:\n{}\n{}",
        registry.addr(),
        realm_host.base_url(),
        leaked.join("\n"),
        out.dump()
    );
}

// ---- finding 2: a reviewed sidecar's tag repointed at a container image ----

#[test]
fn f2_a_sidecar_tag_repointed_at_a_container_image_is_refused_naming_both_kinds() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f2", &[(&reg.addr(), true)]);
    let hello = std::fs::read(wpod_test_support::sidecar("hello")).expect("hello.wasm");
    let sidecar = reg.push("f2/hello", "1", &sidecar_image(&hello, "1"));
    let reference = format!("{}/f2/hello:1", reg.addr());
    let out = env.run(&["pull", "--yes", &reference], Duration::from_secs(120));
    assert!(out.ok(), "{}", out.dump());

    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: rtreg-kind}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "echo MAIN-RAN; sleep 1"]
  - name: hello
    image: {reference}
    imagePullPolicy: Always
    args: [from-the-registry]
"#
    );
    let pod = env.pod("rtreg-kind", &yaml);
    // The approved sidecar runs.
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("hello", "from-the-registry");

    // The publisher repoints the tag at a container image (a static busybox that says so if
    // it ever runs).
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("busybox is missing: install busybox-static (.ci/setup)");
    let tar = Tar::new()
        .dir("bin")
        .file_mode("bin/busybox", &busybox, 0o755)
        .symlink("bin/sh", "busybox")
        .finish();
    let container = container_image(
        &[Layer::gzip(&tar)],
        &["/bin/busybox", "sh", "-c", "echo CONTAINER-RAN; id"],
        &[],
    );
    let moved = reg.push("f2/hello", "1", &container);
    assert_ne!(moved, sidecar);
    let run = pod.run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0), "the repointed tag ran:\n{}", run.dump());
    let err = run.stderr.to_lowercase();
    assert!(
        err.contains("sidecar") && err.contains("container"),
        "the error does not name both kinds:\n{}",
        run.dump()
    );
    assert!(
        !run.stdout.contains("CONTAINER-RAN") && !run.stdout.contains("MAIN-RAN"),
        "a container ran:\n{}",
        run.dump()
    );
    assert!(
        !run.records.iter().any(|r| r["event"] == "podStarted"),
        "{}",
        run.dump()
    );
    assert!(
        reg.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path() == "/v2/f2/hello/manifests/1")
            .count()
            >= 3,
        "the pod never asked for the tag again:\n{}",
        reg.log()
    );
}

// ---- finding 13: a layer deeper than wpod's descriptors ----

/// A mount (tmpfs) that goes with the test.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(at.as_os_str().as_bytes()).expect("path");
        // SAFETY: plain mount(2) with C strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: umount2 of the mount this guard made.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// How many `d` directories nest under `dir` (walked one descriptor at a time).
fn depth_of_d(dir: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: open/openat/close on descriptors this function owns.
    unsafe {
        let mut fd = libc::open(path.as_ptr(), flags);
        let mut depth = 0;
        while fd >= 0 {
            let next = libc::openat(fd, c"d".as_ptr(), flags);
            libc::close(fd);
            fd = next;
            if fd >= 0 {
                depth += 1;
            }
        }
        depth
    }
}

/// "removed N blobs and M layers": M, if the output says so.
fn layers_removed(stdout: &str) -> Option<u64> {
    let at = stdout.find(" layers")?;
    stdout[..at].rsplit(' ').next()?.parse().ok()
}

#[test]
fn f13_a_layer_2500_directories_deep_is_pruned_at_ulimit_n_1024_and_failures_are_not_counted() {
    wpod_test_support::require_root("registry red-team tests");
    let reg = HostileRegistry::start();
    let env = Env::new("f13", &[(&reg.addr(), true)]);
    // Paths stop at 4096 bytes, so depth comes through symlinks the layer plants, which its
    // later entries' parents resolve through (inside the layer): d^1000, then s1 -> d^1000 and
    // s1/d^1000, then s2 -> s1/d^1000 and s2/d^500: `d` nested 2,500 deep.
    let d = |n: usize| vec!["d"; n].join("/");
    let tar = Tar::new()
        .dir(&d(1000))
        .symlink("s1", &d(1000))
        .dir(&format!("s1/{}", d(1000)))
        .symlink("s2", &format!("s1/{}", d(1000)))
        .dir(&format!("s2/{}", d(500)))
        .file(&format!("s2/{}/bottom", d(500)), b"2500 levels down\n")
        .finish();
    let layer = Layer::gzip(&tar);
    let chain_id = layer.diff_id.clone();
    reg.push(
        "f13/deep",
        "1",
        &container_image(&[layer], &["/bin/true"], &[]),
    );
    let image = format!("{}/f13/deep:1", reg.addr());
    let out = env.run(&["pull", &image], Duration::from_secs(300));
    assert!(
        out.ok(),
        "staging: the deep layer did not pull:\n{}",
        out.dump()
    );
    let dir = env.layer_dir(&chain_id);
    let depth = depth_of_d(&dir);
    assert!(
        depth >= 2500,
        "staging: the layer is {depth} deep, not 2500"
    );

    let limited = |args: &[&str]| {
        let mut cmd = env.command(args);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_bounded(cmd, Duration::from_secs(120))
    };
    // `rmi` prunes too; whatever it managed, it must not count what is still there.
    let rmi = limited(&["rmi", &image]);
    if dir.exists() {
        assert!(
            layers_removed(&rmi.stdout).unwrap_or(0) == 0,
            "rmi counts the layer as removed, but it is still there:\n{}",
            rmi.dump()
        );
    }
    let prune = limited(&["image", "prune"]);
    assert!(
        !dir.exists(),
        "the deep layer survived prune at ulimit -n 1024 (rmi, then prune):\n{}\n{}",
        rmi.dump(),
        prune.dump()
    );
    assert!(prune.ok(), "{}\n{}", rmi.dump(), prune.dump());

    // Something prune cannot remove (a busy mount point inside an unused layer): it says so,
    // names it, and does not count it.
    let orphan = env.root().join("images/layers").join("ab".repeat(32));
    std::fs::create_dir_all(orphan.join("busy")).expect("orphan layer");
    std::fs::write(orphan.join("file"), b"x").expect("orphan file");
    let mount = Mounted::tmpfs(&orphan.join("busy"));
    let prune = limited(&["image", "prune"]);
    assert!(orphan.exists(), "staging: the busy layer was removed");
    assert_eq!(
        layers_removed(&prune.stdout).unwrap_or(0),
        0,
        "prune claims a layer it could not remove:\n{}",
        prune.dump()
    );
    assert!(
        !prune.ok() && prune.stderr.contains(&"ab".repeat(6)),
        "prune must fail naming what it could not remove:\n{}",
        prune.dump()
    );
    drop(mount);
    let prune = limited(&["image", "prune"]);
    assert!(prune.ok(), "{}", prune.dump());
    assert!(!orphan.exists(), "{}", prune.dump());
    assert!(
        layers_removed(&prune.stdout).unwrap_or(0) >= 1,
        "{}",
        prune.dump()
    );
}
