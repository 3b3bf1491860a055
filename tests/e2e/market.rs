//! The sidecar marketplace end to end, against the same real registry as the image tests
//! (Debian's `docker-registry` on loopback): a sidecar author pushes and signs, a user searches,
//! reviews, approves and runs; upgrades show a permission diff; and every way an artifact can
//! be wrong is refused with a clear error before anything runs. Needs root (pods) and the
//! packages of `.ci/setup`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::images::{registry, ImageEnv};
use crate::text;

/// An image env with a trust policy and keys of its own.
struct Market {
    env: ImageEnv,
    addr: String,
}

/// The password of the tests' signing keys (cosign's COSIGN_PASSWORD).
const KEY_PASSWORD: &str = "e2e key password";

impl Market {
    fn new(test: &str) -> Self {
        let env = ImageEnv::new(&format!("market-{test}"));
        let addr = registry().addr.clone();
        let m = Market { env, addr };
        m.accept_anything();
        m
    }

    fn dir(&self) -> &Path {
        &self.env.dir
    }

    /// `REGISTRY/wpod-test/NAME`
    fn repo(&self, name: &str) -> String {
        format!("{}/wpod-test/{name}", self.addr)
    }

    fn policy_path(&self) -> PathBuf {
        self.dir().join("policy.json")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::wpod_bin());
        cmd.args(args)
            .envs(self.env.vars())
            // Keys are written and opened with a password, as cosign's are.
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .env_remove("WPOD_KEY_PASSWORD")
            .env("WPOD_POLICY", self.policy_path())
            .current_dir(self.dir())
            .stdin(Stdio::null());
        cmd
    }

    fn wpod(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run wpod")
    }

    /// `wpod ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.wpod(args);
        assert!(
            out.status.success(),
            "wpod {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `wpod ARGS`, which must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.wpod(args);
        assert!(
            !out.status.success(),
            "wpod {args:?} succeeded:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// A policy: anything goes, except that `scope` needs a signature by `key` (a .pub path).
    fn require_signature(&self, scope: &str, key: &Path) {
        std::fs::write(
            self.policy_path(),
            format!(
                r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
                    "transports": {{"docker": {{"{scope}": [{{"type": "sigstoreSigned", "keyPath": "{}"}}]}}}}}}"#,
                key.display()
            ),
        )
        .unwrap();
    }

    fn accept_anything(&self) {
        std::fs::write(
            self.policy_path(),
            r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
        )
        .unwrap();
    }

    /// `wpod key generate NAME` in the test's directory: (private, public) paths.
    fn key(&self, name: &str) -> (PathBuf, PathBuf) {
        self.ok(&["key", "generate", name]);
        (
            self.dir().join(format!("{name}.key")),
            self.dir().join(format!("{name}.pub")),
        )
    }

    /// `wpod push SIDECAR REF`: the digest it printed.
    fn push(&self, sidecar: &str, reference: &str, annotations: &[&str]) -> String {
        let component = wpod_test_support::sidecar(sidecar);
        let mut args = vec!["push", component.to_str().unwrap(), reference];
        for a in annotations {
            args.extend(["--annotation", a]);
        }
        let out = self.ok(&args);
        let pinned = out.trim();
        let digest = pinned
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| panic!("push printed {pinned:?}, not REF@sha256:..."));
        assert!(pinned.starts_with(reference), "{pinned}");
        digest
    }

    fn pod(&self, name: &str, yaml: &str) -> crate::pods::TestPod {
        let mut pod = self.env.pod(name, yaml);
        pod.env.push((
            "WPOD_POLICY".into(),
            self.policy_path().display().to_string(),
        ));
        pod
    }

    fn cache_entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.env.root().join("cache"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stored_images(&self) -> String {
        std::fs::read_to_string(self.env.root().join("images/images.json")).unwrap_or_default()
    }

    fn ingest_is_empty(&self) -> bool {
        std::fs::read_dir(self.env.root().join("images/ingest"))
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(true)
    }
}

fn hello_pod(name: &str, image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "sleep 1"]
  - name: hello
    image: {image}
    args: [from-the-registry]
"#
    )
}

/// Low-level registry writes, for artifacts `wpod push` would never produce.
fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let file = std::env::temp_dir().join(format!("wpod-e2e-blob-{}", &digest[7..23]));
    std::fs::write(&file, bytes).unwrap();
    let started = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-D", "-", "-X", "POST"])
        .arg(format!("http://{addr}/v2/{repo}/blobs/uploads/"))
        .output()
        .expect("curl");
    let headers = text(&started.stdout);
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap_or_else(|| panic!("no upload location: {headers}"))
        .trim()
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{addr}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let done = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}{sep}digest={digest}"))
        .output()
        .expect("curl");
    let _ = std::fs::remove_file(&file);
    assert!(done.status.success(), "blob upload: {}", text(&done.stderr));
    digest
}

fn put_manifest(addr: &str, repo: &str, tag: &str, manifest: &[u8]) {
    let file =
        std::env::temp_dir().join(format!("wpod-e2e-manifest-{repo}-{tag}").replace('/', "_"));
    std::fs::write(&file, manifest).unwrap();
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .output()
        .expect("curl");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "manifest upload: {}",
        text(&out.stderr)
    );
}

fn get(url: &str, accept: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-fsS", "-H", &format!("Accept: {accept}"), url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {url}: {}", text(&out.stderr));
    out.stdout
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An artifact in the CNCF layout with a chosen config and layer, pushed as `repo:tag`.
fn push_artifact(
    addr: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
    layer_size: Option<u64>,
) {
    let config_digest = put_blob(addr, repo, config);
    let layer_digest = put_blob(addr, repo, layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": layer_size.unwrap_or(layer.len() as u64)}],
    });
    put_manifest(addr, repo, tag, manifest.to_string().as_bytes());
}

/// `component` with a custom section naming `tag` appended: the same component, another
/// digest (a blob no other test shares).
fn unique_component(component: &[u8], tag: &str) -> Vec<u8> {
    let name = format!("wpod-test-{tag}-{}", std::process::id());
    let mut section = vec![name.len() as u8];
    section.extend(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8);
    out.extend(section);
    out
}

fn wasm_config(layer: &[u8], imports: &[String]) -> Vec<u8> {
    serde_json::json!({
        "architecture": "wasm", "os": "wasip2",
        "layerDigests": [format!("sha256:{}", sha256_hex(layer))],
        "component": {"imports": imports, "exports": ["wasi:cli/run@0.2.0"]},
    })
    .to_string()
    .into_bytes()
}

fn imports_of(sidecar: &str) -> Vec<String> {
    let out = crate::wpod_output(&[
        "inspect",
        "--output",
        "json",
        wpod_test_support::sidecar(sidecar).to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_author_publishes_and_signs_and_a_user_finds_reviews_and_runs_the_sidecar() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("path");
    let (key, public) = m.key("team");
    let repo = m.repo("hello");
    let reference = format!("{repo}:1.0");
    // The author: push with a description, sign.
    let digest = m.push(
        "hello",
        &reference,
        &["org.opencontainers.image.description=Says hello from the registry"],
    );
    let signed = m.ok(&["sign", &reference, "--key", key.to_str().unwrap()]);
    assert!(signed.contains(&digest), "{signed}");
    // The key is cosign's encrypted format: the wrong password does not open it (issue 27,
    // item 15), and without a password nor a terminal a new key is refused unless asked for
    // without one.
    let wrong = m
        .cmd(&["sign", &reference, "--key", key.to_str().unwrap()])
        .env("COSIGN_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "signed with the wrong password");
    let bare = |args: &[&str]| m.cmd(args).env_remove("COSIGN_PASSWORD").output().unwrap();
    let refused = bare(&["key", "generate", "nopass"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("set COSIGN_PASSWORD"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!m.dir().join("nopass.key").exists());
    let open = bare(&["key", "generate", "--no-password", "nopass"]);
    assert!(open.status.success(), "{}", text(&open.stderr));
    assert!(text(&open.stderr).contains("has no password"));
    // The bytes are what the CNCF layout says, at the digest push printed (an independent client).
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "{}", text(&raw.stderr));
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), digest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "1.0"
    );
    // The user, under a policy that requires the team's signature: search finds it with its
    // description and signer; inspect shows its needs from the config, before download.
    m.require_signature(&format!("{}/wpod-test", m.addr), &public);
    let found = m.ok(&["search", "--output", "json", &format!("{}/hello", m.addr)]);
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let entry = found
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == repo.as_str())
        .unwrap_or_else(|| panic!("search did not find {repo}: {found}"));
    assert_eq!(entry["version"], "1.0");
    assert_eq!(entry["description"], "Says hello from the registry");
    assert_eq!(entry["signer"], public.to_str().unwrap());
    m.push("probe", &format!("{}:0.1", m.repo("helloless")), &[]);
    let listed = m.ok(&["search", &format!("{}/helloless", m.addr)]);
    assert!(listed.contains("unsigned"), "{listed}");
    let inspected = m.ok(&["inspect", &reference]);
    assert!(
        inspected.contains("from the artifact's config"),
        "{inspected}"
    );
    assert!(inspected.contains("wasi:cli/environment"), "{inspected}");
    assert!(
        inspected.contains(&format!("signer: {}", public.display())),
        "{inspected}"
    );
    // Pull: the review, then approval.
    let refused = m.fails(&["pull", &reference]);
    assert!(
        refused.contains("needs approval") && refused.contains("--yes"),
        "{refused}"
    );
    assert!(
        refused.contains("what it may do"),
        "the review is shown first: {refused}"
    );
    // The interfaces every sidecar has are one line (issue 27, item 10); --all lists them.
    assert!(
        refused.contains("interfaces every sidecar has") && !refused.contains("always granted:"),
        "{refused}"
    );
    assert!(
        refused.contains(public.to_str().unwrap()),
        "the signer is shown: {refused}"
    );
    let pulled = m.wpod(&["pull", "--yes", "--all", &reference]);
    let review = text(&pulled.stderr);
    assert!(pulled.status.success(), "{review}");
    assert!(review.contains("always granted:"), "{review}");
    assert!(
        review.contains("approved") && review.contains("compiled into the cache"),
        "{review}"
    );
    assert_eq!(
        m.cache_entries().len(),
        1,
        "compiled ahead of time: {review}"
    );
    // A pod names the sidecar by its registry reference and runs it.
    let pod = m.pod("mkt-path", &hello_pod("mkt-path", &reference));
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("hello", "from-the-registry");
    m.env.assert_no_leftovers("mkt-path");
}

#[test]
fn an_upgrade_that_adds_main_process_shows_the_diff_and_is_refused_until_approved() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("upgrade");
    m.accept_anything();
    let reference = format!("{}:stable", m.repo("watcher"));
    let v1 = m.push("hello", &reference, &[]);
    m.ok(&["pull", "--yes", &reference]);
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: mkt-upgrade}}
spec:
  restartPolicy: Never
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "echo main says hi; sleep 2"]
  - name: watcher
    image: {reference}
    imagePullPolicy: Always
"#
    );
    let pod = m.pod("mkt-upgrade", &yaml);
    assert_eq!(pod.run(Duration::from_secs(60)).code, Some(0));
    // The author publishes a version that reads the main process; the tag moves.
    let v2 = m.push("main-probe", &reference, &[]);
    assert_ne!(v1, v2);
    let run = pod.run(Duration::from_secs(60));
    assert_ne!(
        run.code,
        Some(0),
        "an unapproved upgrade must not run: {}",
        run.dump()
    );
    for needle in [
        v2.as_str(),
        v1.as_str(),
        "+ wpod:sidecar/main-process",
        "shareProcessNamespace",
        "wpod pull",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} missing: {}",
            run.stderr
        );
    }
    assert!(run.logs("main").is_empty(), "nothing ran: {}", run.dump());
    // Recorded as what it was: a refusal, not a failed pull (issue 27, item 11).
    assert!(
        run.records.iter().any(|r| r["event"] == "imageRefused")
            && !run.records.iter().any(|r| r["event"] == "errImagePull"),
        "{}",
        run.dump()
    );
    m.env.assert_no_leftovers("mkt-upgrade");
    // `wpod pull` shows the same diff and waits for an approval.
    let refused = m.fails(&["pull", &reference]);
    assert!(refused.contains("+ wpod:sidecar/main-process"), "{refused}");
    assert!(
        refused.contains("imports more than the approved version"),
        "{refused}"
    );
    m.ok(&["pull", "--yes", &reference]);
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    // Approved is not granted: in a pod without shareProcessNamespace the same sidecar is
    // refused, with the manifest's location and the field that would grant it.
    let ungranted = m.pod(
        "mkt-ungranted",
        &yaml
            .replace("mkt-upgrade", "mkt-ungranted")
            .replace("  shareProcessNamespace: true\n", ""),
    );
    let run = ungranted.run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert!(
        run.stderr.contains("pod.yaml:") && run.stderr.contains("set spec.shareProcessNamespace"),
        "{}",
        run.stderr
    );
    assert!(run.logs("main").is_empty(), "nothing ran: {}", run.dump());
    m.env.assert_no_leftovers("mkt-ungranted");
    // A downgrade back to fewer imports needs no new approval; it runs with a warning.
    m.push("hello", &reference, &[]);
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let warned = run.records.iter().any(|r| {
        r["event"] == "warning"
            && r["message"]
                .as_str()
                .unwrap_or("")
                .contains("imports nothing more")
    });
    assert!(warned, "{}", run.dump());
}

#[test]
fn what_wpod_signs_verifies_independently_and_what_others_sign_verifies_in_wpod() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("interop");
    let (key, public) = m.key("team");
    let reference = format!("{}:1.0", m.repo("interop"));
    let digest = m.push("hello", &reference, &[]);
    m.ok(&["sign", &reference, "--key", key.to_str().unwrap()]);
    // Python's `cryptography` (OpenSSL) verifies the stored signature the way cosign does.
    let verify = Command::new("python3")
        .arg(wpod_test_support::repo_root().join("tests/market/cosign.py"))
        .args(["verify", &m.addr, "wpod-test/interop", &digest])
        .arg(&public)
        .output()
        .expect("python3");
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // And a signature made by that independent implementation, with its own key, is what
    // wpod's policy accepts.
    let other = Command::new("python3")
        .arg(wpod_test_support::repo_root().join("tests/market/cosign.py"))
        .args(["sign", &m.addr, "wpod-test/interop", &digest])
        .arg(m.dir().join("py"))
        .output()
        .expect("python3");
    assert!(
        other.status.success(),
        "{}{}",
        text(&other.stdout),
        text(&other.stderr)
    );
    // It names the repository alone, as cosign does: the default signedIdentity
    // (matchRepoDigestOrExact) refuses that, as podman does, and says what would accept it.
    let scope = format!("{}/wpod-test/interop", m.addr);
    m.require_signature(&scope, &m.dir().join("py.pub"));
    let refused = m.fails(&["pull", "--yes", &reference]);
    assert!(
        refused.contains(&format!("it is for \"{}/wpod-test/interop\"", m.addr))
            && refused.contains("matchRepository"),
        "{refused}"
    );
    std::fs::write(
        m.policy_path(),
        format!(
            r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
                "transports": {{"docker": {{"{scope}": [{{"type": "sigstoreSigned", "keyPath": "{}",
                  "signedIdentity": {{"type": "matchRepository"}}}}]}}}}}}"#,
            m.dir().join("py.pub").display()
        ),
    )
    .unwrap();
    let pulled = m.wpod(&["pull", "--yes", &reference]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(
        text(&pulled.stderr).contains("py.pub"),
        "{}",
        text(&pulled.stderr)
    );
}

#[test]
fn bad_artifacts_and_bad_signatures_are_refused_and_nothing_runs() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("negative");
    let (key, public) = m.key("team");
    let (other_key, _) = m.key("other");
    let addr = m.addr.clone();
    m.require_signature(&format!("{addr}/wpod-test"), &public);
    let pull = |reference: &str| m.fails(&["pull", "--yes", reference]);
    let mut cases: BTreeMap<&str, (String, &str)> = BTreeMap::new();

    // Unsigned under a requiring policy.
    let unsigned = format!("{}:1", m.repo("unsigned"));
    m.push("hello", &unsigned, &[]);
    cases.insert("unsigned", (pull(&unsigned), "is not signed"));

    // Signed by a key the policy does not name.
    let wrong_key = format!("{}:1", m.repo("wrong-key"));
    m.push("hello", &wrong_key, &[]);
    m.ok(&["sign", &wrong_key, "--key", other_key.to_str().unwrap()]);
    cases.insert(
        "another key",
        (pull(&wrong_key), "does not verify with this key"),
    );

    // A valid signature of another digest, copied to this digest's signature tag.
    let a = format!("{}:a", m.repo("other-digest"));
    let b = format!("{}:b", m.repo("other-digest"));
    let da = m.push("hello", &a, &[]);
    let db = m.push("probe", &b, &[]);
    m.ok(&["sign", &a, "--key", key.to_str().unwrap()]);
    let sig = get(
        &format!(
            "http://{addr}/v2/wpod-test/other-digest/manifests/sha256-{}.sig",
            &da[7..]
        ),
        "application/vnd.oci.image.manifest.v1+json",
    );
    put_manifest(
        &addr,
        "wpod-test/other-digest",
        &format!("sha256-{}.sig", &db[7..]),
        &sig,
    );
    cases.insert("another digest", (pull(&b), "it signs another image"));

    // The tag moved after signing: the new digest has no signature.
    let moved = format!("{}:stable", m.repo("moved"));
    m.push("hello", &moved, &[]);
    m.ok(&["sign", &moved, "--key", key.to_str().unwrap()]);
    m.push("probe", &moved, &[]);
    cases.insert("tag moved", (pull(&moved), "is not signed"));

    // Everything below is signed by the right key: what is wrong is the artifact.
    let sign = |reference: &str| m.ok(&["sign", reference, "--key", key.to_str().unwrap()]);
    let hello = std::fs::read(wpod_test_support::sidecar("hello")).unwrap();

    // A config that hides an import.
    let hidden = format!("{}:1", m.repo("hidden-imports"));
    let mut fewer = imports_of("main-probe");
    fewer.retain(|i| !i.contains("main-process"));
    let main_probe = std::fs::read(wpod_test_support::sidecar("main-probe")).unwrap();
    push_artifact(
        &addr,
        "wpod-test/hidden-imports",
        "1",
        &wasm_config(&main_probe, &fewer),
        &main_probe,
        None,
    );
    sign(&hidden);
    cases.insert(
        "config hides imports",
        (pull(&hidden), "does not say what the component imports"),
    );

    // Precompiled native code as the layer.
    let cwasm_path = m.dir().join("hello.cwasm");
    let precompiled = precompile(&hello, &cwasm_path);
    let cwasm = format!("{}:1", m.repo("precompiled"));
    push_artifact(
        &addr,
        "wpod-test/precompiled",
        "1",
        &wasm_config(&precompiled, &[]),
        &precompiled,
        None,
    );
    sign(&cwasm);
    cases.insert(
        "precompiled layer",
        (pull(&cwasm), "precompiled native code"),
    );

    // A layer bigger than wpod accepts (the manifest says so before any download).
    let oversize = format!("{}:1", m.repo("oversize"));
    push_artifact(
        &addr,
        "wpod-test/oversize",
        "1",
        &wasm_config(&hello, &imports_of("hello")),
        &hello,
        Some(300 << 20),
    );
    sign(&oversize);
    cases.insert("oversize", (pull(&oversize), "more than the"));

    // A negative size in the manifest (no "unknown size" loophole around the cap).
    let negative = format!("{}:1", m.repo("negative-size"));
    let config = wasm_config(&hello, &imports_of("hello"));
    let config_digest = put_blob(&addr, "wpod-test/negative-size", &config);
    let layer_digest = put_blob(&addr, "wpod-test/negative-size", &hello);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": -1}],
    });
    put_manifest(
        &addr,
        "wpod-test/negative-size",
        "1",
        manifest.to_string().as_bytes(),
    );
    sign(&negative);
    cases.insert("negative size", (pull(&negative), "a layer of size -1"));

    // A size that understates the layer: the download stops at the declared size.
    let understated = format!("{}:1", m.repo("understated"));
    push_artifact(
        &addr,
        "wpod-test/understated",
        "1",
        &wasm_config(&hello, &imports_of("hello")),
        &hello,
        Some(1000),
    );
    sign(&understated);
    cases.insert(
        "understated size",
        (
            pull(&understated),
            "larger than the 1000 bytes its manifest says",
        ),
    );

    // A tampered layer: the registry serves other bytes than the digest names. The component
    // is made unique first: the registry keeps blobs by digest for every repository, and
    // tampering with hello's own blob once broke another test pulling hello at that moment.
    let tampered = format!("{}:1", m.repo("tampered"));
    let unique_hello = unique_component(&hello, "tampered");
    push_artifact(
        &addr,
        "wpod-test/tampered",
        "1",
        &wasm_config(&unique_hello, &imports_of("hello")),
        &unique_hello,
        None,
    );
    sign(&tampered);
    let layer = sha256_hex(&unique_hello);
    let blob = registry().data.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{layer}/data",
        &layer[..2]
    ));
    let original = std::fs::read(&blob).unwrap();
    let mut evil = original.clone();
    let n = evil.len();
    evil[n / 2] ^= 0xff;
    std::fs::write(&blob, &evil).unwrap();
    cases.insert(
        "tampered layer",
        (pull(&tampered), "does not match its digest"),
    );
    std::fs::write(&blob, &original).unwrap();

    // The registry loses the layer mid-pull (after the manifest and config were read).
    let gone = format!("{}:1", m.repo("gone"));
    // Unique, as above: the blob is deleted from the registry for good.
    let probe = unique_component(
        &std::fs::read(wpod_test_support::sidecar("log-tail")).unwrap(),
        "gone",
    );
    push_artifact(
        &addr,
        "wpod-test/gone",
        "1",
        &wasm_config(&probe, &imports_of("log-tail")),
        &probe,
        None,
    );
    sign(&gone);
    let layer = sha256_hex(&probe);
    let blob_dir = registry().data.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{layer}",
        &layer[..2]
    ));
    std::fs::remove_dir_all(&blob_dir).unwrap();
    cases.insert("registry loses the layer", (pull(&gone), "blob unknown"));

    let mut failures = Vec::new();
    for (case, (stderr, needle)) in &cases {
        if !stderr.contains(needle) {
            failures.push(format!("{case}: expected {needle:?} in:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Nothing refused was recorded or approved, and no download was left half-stored.
    let stored = m.stored_images();
    for repo in [
        "unsigned",
        "wrong-key",
        "other-digest",
        "moved",
        "hidden-imports",
        "precompiled",
        "oversize",
        "negative-size",
        "understated",
        "tampered",
        "gone",
    ] {
        assert!(
            !stored.contains(&format!("wpod-test/{repo}")),
            "{repo} was stored: {stored}"
        );
    }
    assert!(
        m.ingest_is_empty(),
        "a refused download left bytes in ingest/"
    );
    assert!(
        !m.env.root().join("approvals.json").exists(),
        "nothing was approved"
    );
    // And a pod naming a refused sidecar never starts.
    let pod = m.pod("mkt-negative", &hello_pod("mkt-negative", &unsigned));
    let run = pod.run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
    m.env.assert_no_leftovers("mkt-negative");
}

/// `bytes` compiled by wasmtime into a `.cwasm` (what a hostile publisher might push).
fn precompile(bytes: &[u8], out: &Path) -> Vec<u8> {
    let engine = wasmtime::Engine::default();
    let cwasm = engine.precompile_component(bytes).expect("precompile");
    std::fs::write(out, &cwasm).unwrap();
    cwasm
}

#[test]
fn a_corrupt_cache_entry_is_recompiled_never_run() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("cache");
    m.accept_anything();
    let reference = format!("{}:1", m.repo("cached"));
    m.push("hello", &reference, &[]);
    m.ok(&["pull", "--yes", &reference]);
    let entries = m.cache_entries();
    assert_eq!(entries.len(), 1);
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let pod = m.pod("mkt-cache", &hello_pod("mkt-cache", &reference));
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("hello", "from-the-registry");
    assert!(
        run.stderr.contains("does not carry wpod's MAC"),
        "{}",
        run.stderr
    );
    // The component in the store altered after its review: the pod refuses it.
    let layer = sha256_hex(&std::fs::read(wpod_test_support::sidecar("hello")).unwrap());
    let blob = m.env.root().join("images/blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let run = pod.run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert!(
        run.stderr.contains("the store was altered"),
        "{}",
        run.stderr
    );
    assert!(run.logs("hello").is_empty(), "nothing ran: {}", run.dump());
    m.env.assert_no_leftovers("mkt-cache");
}

/// A child process killed and reaped when dropped (the test's proxy).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_registry_that_goes_down_mid_download_leaves_nothing_half_stored() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("cut");
    let addr = m.addr.clone();
    let reference = format!("{}:1", m.repo("cut"));
    m.push("tls-proxy", &reference, &[]);
    let layer = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(wpod_test_support::sidecar("tls-proxy")).unwrap())
    );
    let port = crate::free_port();
    let _proxy = Killed(
        Command::new("python3")
            .arg(wpod_test_support::repo_root().join("tests/market/cutting_proxy.py"))
            .args([&port.to_string(), &addr, &layer])
            .spawn()
            .expect("python3"),
    );
    let up = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        crate::pods::host_can_connect(&format!("127.0.0.1:{port}"))
    });
    assert!(up, "the proxy did not come up");
    std::fs::write(
        m.dir().join("registries.conf"),
        format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n\n[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"),
    )
    .unwrap();
    let via = format!("127.0.0.1:{port}/wpod-test/cut:1");
    let refused = m.fails(&["pull", "--yes", &via]);
    assert!(refused.contains(&format!("download {layer}")), "{refused}");
    assert!(
        !m.stored_images().contains("wpod-test/cut"),
        "{}",
        m.stored_images()
    );
    assert!(m.ingest_is_empty(), "half a download is left in ingest/");
    assert!(
        !m.env
            .root()
            .join("images/blobs/sha256")
            .join(&layer[7..])
            .exists(),
        "half a blob is stored"
    );
}

#[test]
fn an_independent_client_pulls_what_wpod_pushes_and_wpod_pulls_what_it_pushes() {
    wpod_test_support::require_root("marketplace tests");
    let script = wpod_test_support::repo_root().join("tests/market/oras_interop.py");
    let has_oras = Command::new("python3")
        .args(["-c", "import oras.provider"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_oras,
        "PyPI's oras is missing: run .ci/setup (pip install oras)"
    );
    let m = Market::new("oras");
    m.accept_anything();
    // wpod pushes, oras pulls the component back byte for byte.
    let reference = format!("{}:1.0", m.repo("to-oras"));
    m.push("probe", &reference, &[]);
    let out = m.dir().join("oras-out");
    let pulled = Command::new("python3")
        .arg(&script)
        .args(["pull", &reference])
        .arg(&out)
        .output()
        .expect("python3");
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert_eq!(
        std::fs::read(out.join("probe.wasm")).expect("oras wrote probe.wasm"),
        std::fs::read(wpod_test_support::sidecar("probe")).unwrap()
    );
    // oras pushes a sidecar in the CNCF layout (its config lists no imports); wpod pulls it,
    // recomputes the imports from the bytes, and a pod runs it.
    let hello = m.dir().join("hello.wasm");
    std::fs::copy(wpod_test_support::sidecar("hello"), &hello).unwrap();
    let bytes = std::fs::read(&hello).unwrap();
    let config = m.dir().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({"architecture": "wasm", "os": "wasip2", "layerDigests": [format!("sha256:{}", sha256_hex(&bytes))]})
            .to_string(),
    )
    .unwrap();
    let reference = format!("{}:1.0", m.repo("from-oras"));
    let pushed = Command::new("python3")
        .arg(&script)
        .args(["push", &reference])
        .arg(&hello)
        .arg(&config)
        .output()
        .expect("python3");
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let review = m.wpod(&["pull", "--yes", "--output", "json", &reference]);
    assert!(review.status.success(), "{}", text(&review.stderr));
    let records: Vec<serde_json::Value> = text(&review.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let review = records
        .iter()
        .find(|r| r["event"] == "review")
        .expect("a review record");
    let imports: Vec<&str> = review["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment")),
        "{imports:?}"
    );
    let pod = m.pod("mkt-oras", &hello_pod("mkt-oras", &reference));
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("hello", "from-the-registry");
}

/// Copies `tags` of `src` to `dst` on the test registry (blobs mounted across repositories,
/// manifests byte for byte), as a mirror would hold them.
fn copy_repo(addr: &str, src: &str, dst: &str, tags: &[String]) {
    const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";
    for tag in tags {
        let manifest = get(&format!("http://{addr}/v2/{src}/manifests/{tag}"), ACCEPT);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            let out = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "-X", "POST"])
                .arg(format!(
                    "http://{addr}/v2/{dst}/blobs/uploads/?mount={b}&from={src}"
                ))
                .output()
                .expect("curl");
            assert!(out.status.success(), "mount {b}: {}", text(&out.stderr));
        }
        put_manifest(addr, dst, tag, &manifest);
    }
}

#[test]
fn signatures_verify_on_a_mirror_because_the_digest_not_the_name_is_trusted() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("mirror");
    let addr = m.addr.clone();
    // `sidecars.example.invalid/team` lives at REGISTRY/upstream/team, mirrored at
    // REGISTRY/mirror/team: the mirror is asked first.
    std::fs::write(
        m.dir().join("registries.conf"),
        format!(
            "[[registry]]\nprefix = \"sidecars.example.invalid/team\"\nlocation = \"{addr}/upstream/team\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{addr}/mirror/team\"\ninsecure = true\n\n\
             [[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let (key, public) = m.key("team");
    let reference = "sidecars.example.invalid/team/hello:1.0";
    let digest = m.push("hello", reference, &[]);
    m.ok(&["sign", reference, "--key", key.to_str().unwrap()]);
    copy_repo(
        &addr,
        "upstream/team/hello",
        "mirror/team/hello",
        &["1.0".to_string(), format!("sha256-{}.sig", &digest[7..])],
    );
    m.require_signature("sidecars.example.invalid/team", &public);
    let pulled = m.wpod(&["pull", "--yes", "--output", "json", reference]);
    let out = text(&pulled.stdout);
    assert!(pulled.status.success(), "{out}{}", text(&pulled.stderr));
    assert!(
        out.contains(&format!("\"from\":\"{addr}/mirror/team/hello\"")),
        "{out}"
    );
    assert!(
        out.contains(public.to_str().unwrap()),
        "verified with the team key: {out}"
    );
    // A mirror that serves an unsigned digest under the same tag is passed over: the upstream
    // registry's signed one is pulled.
    let evil = m.push("probe", &format!("{addr}/mirror/team/hello:1.0"), &[]);
    assert_ne!(evil, digest);
    let pulled = m.wpod(&["pull", "--yes", "--output", "json", reference]);
    let out = text(&pulled.stdout);
    assert!(pulled.status.success(), "{out}{}", text(&pulled.stderr));
    assert!(
        out.contains("mirrorFailed") && out.contains("is not signed"),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"from\":\"{addr}/upstream/team/hello\"")),
        "{out}"
    );
    assert!(out.contains(&digest), "the signed digest: {out}");
    // With the upstream gone too, nothing unsigned is ever taken.
    copy_repo(
        &addr,
        "mirror/team/hello",
        "upstream/team/hello",
        &["1.0".to_string()],
    );
    let refused = m.fails(&["pull", "--yes", reference]);
    assert!(refused.contains("is not signed"), "{refused}");
}

#[test]
fn save_and_load_move_signed_sidecars_to_a_host_no_registry_reaches() {
    wpod_test_support::require_root("marketplace tests");
    let online = Market::new("save");
    let (key, public) = online.key("team");
    let reference = format!("{}:1.0", online.repo("carried"));
    online.push("hello", &reference, &[]);
    online.ok(&["sign", &reference, "--key", key.to_str().unwrap()]);
    let dir = online.dir().join("layout");
    let saved = online.ok(&["save", &reference, "--dir", dir.to_str().unwrap()]);
    assert!(saved.contains("1 signatures"), "{saved}");
    // The air-gapped host: its registries.conf points at nothing, its approvals file is the
    // team's checked-in one.
    let offline = Market::new("load");
    std::fs::write(
        offline.dir().join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\nblocked = true\n",
            online.addr
        ),
    )
    .unwrap();
    offline.require_signature(&format!("{}/wpod-test", online.addr), &public);
    let approvals = offline.dir().join("team-approvals.json");
    let mut load = offline.cmd(&["load", "--yes", dir.to_str().unwrap()]);
    load.env("WPOD_APPROVALS", &approvals);
    let out = load.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(approvals.is_file(), "the approval went to $WPOD_APPROVALS");
    let mut pod = offline.pod(
        "mkt-load",
        &hello_pod("mkt-load", &reference).replace(
            &format!("image: {reference}"),
            &format!("image: {reference}\n    imagePullPolicy: IfNotPresent"),
        ),
    );
    pod.env
        .push(("WPOD_APPROVALS".into(), approvals.display().to_string()));
    let run = pod.run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("hello", "from-the-registry");
    // A layout whose component was altered is refused, and nothing is stored.
    let tampered = Market::new("load-tampered");
    tampered.require_signature(&format!("{}/wpod-test", online.addr), &public);
    let layer = sha256_hex(&std::fs::read(wpod_test_support::sidecar("hello")).unwrap());
    let blob = dir.join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let refused = tampered.fails(&["load", "--yes", dir.to_str().unwrap()]);
    assert!(refused.contains("does not match its digest"), "{refused}");
    assert!(
        !tampered.stored_images().contains("carried"),
        "{}",
        tampered.stored_images()
    );
}

#[test]
fn the_trust_policy_applies_to_container_images_too() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("images");
    let (key, public) = m.key("team");
    m.require_signature("docker.io/library/busybox", &public);
    let refused = m.fails(&["pull", "busybox"]);
    assert!(refused.contains("is not signed"), "{refused}");
    m.ok(&["sign", "busybox", "--key", key.to_str().unwrap()]);
    let pulled = m.wpod(&["pull", "busybox"]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(
        m.stored_images().contains(public.to_str().unwrap()),
        "the signer is recorded"
    );
}

/// `wpod ARGS` on a pseudo-terminal (util-linux `script`), answering `answer` to any prompt.
fn on_a_terminal(m: &Market, args: &[&str], answer: &str) -> (bool, String) {
    let command = std::iter::once(crate::wpod_bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .envs(m.env.vars())
        .env("WPOD_POLICY", m.policy_path())
        .current_dir(m.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // Answer once the question is on the terminal (a slow first compile may take a while), or
    // at once if wpod ended without asking.
    use std::io::{Read, Write};
    let mut stdout = child.stdout.take().unwrap();
    let (asked, question) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
            if got.windows(5).any(|w| w == b"[y/N]") {
                let _ = asked.send(());
            }
        }
        got
    });
    let _ = question.recv_timeout(Duration::from_secs(120));
    let _ = child.stdin.take().unwrap().write_all(answer.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = reader.join().expect("the terminal's output");
    (out.status.success(), text(&stdout) + &text(&out.stderr))
}

/// A component that imports `import` (an empty instance) and nothing else.
fn component_importing(import: &str) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut component = Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    component.section(&types);
    let mut imports = ComponentImportSection::new();
    imports.import(import, ComponentTypeRef::Instance(0));
    component.section(&imports);
    component.finish()
}

#[test]
fn approval_is_asked_on_a_terminal_and_ungrantable_imports_are_refused() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("prompt");
    m.accept_anything();
    let reference = format!("{}:1", m.repo("asked"));
    let digest = m.push("hello", &reference, &[]);
    let (ok, out) = on_a_terminal(&m, &["pull", &reference], "n\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("[y/N]") && out.contains("not approved"),
        "{out}"
    );
    let approvals = m.env.root().join("approvals.json");
    assert!(!approvals.exists(), "a no approves nothing");
    let (ok, out) = on_a_terminal(&m, &["pull", &reference], "y\n");
    assert!(ok, "{out}");
    let recorded = std::fs::read_to_string(&approvals).unwrap();
    assert!(recorded.contains(&digest), "{recorded}");
    // A component importing what no Pod field grants is not approved unless asked for.
    let odd = m.dir().join("http-client.wasm");
    std::fs::write(
        &odd,
        component_importing("wasi:http/outgoing-handler@0.2.0"),
    )
    .unwrap();
    let reference = format!("{}:1", m.repo("ungrantable"));
    m.ok(&["push", odd.to_str().unwrap(), &reference]);
    let refused = m.fails(&["pull", "--yes", &reference]);
    assert!(
        refused.contains("wasi:http/outgoing-handler@0.2.0")
            && refused.contains("no Pod field grants"),
        "{refused}"
    );
    assert!(refused.contains("--allow-ungrantable"), "{refused}");
    m.ok(&["pull", "--yes", "--allow-ungrantable", &reference]);
}

/// Issue 23, finding 3: a publisher's strings (title, version, description) with terminal
/// escape sequences and bidi overrides once redrew the permission review: the user's `y`
/// approved what the screen did not show. Every such string is escaped before it reaches a
/// terminal: the review, `inspect` and `search`.
#[test]
fn a_publishers_escape_sequences_never_reach_the_terminal() {
    wpod_test_support::require_root("marketplace tests");
    let m = Market::new("escapes");
    m.accept_anything();
    let reference = format!("{}:1", m.repo("spoofed"));
    let clear = "\u{1b}[2J\u{1b}[H";
    let title = format!("org.opencontainers.image.title=nice{clear}imports: nothing\u{202e}");
    let description =
        "org.opencontainers.image.description=harmless\u{9b}31m\rhidden\u{2066}".to_string();
    m.push("hello", &reference, &[&title, &description]);
    let raw = |out: &str| {
        out.contains('\u{1b}')
            && (out.contains(clear) || out.contains("\u{202e}") || out.contains("\u{2066}"))
            || out.contains('\u{9b}')
            || out.contains("harmless\rhidden")
    };
    let inspected = m.ok(&["inspect", &reference]);
    assert!(
        !raw(&inspected),
        "inspect printed the raw bytes: {inspected:?}"
    );
    assert!(inspected.contains("\\x1b[2J"), "{inspected}");
    let registry = reference.split('/').next().unwrap().to_string();
    let searched = m.wpod(&["search", &format!("{registry}/spoofed")]);
    let searched = text(&searched.stdout) + &text(&searched.stderr);
    assert!(
        !raw(&searched),
        "search printed the raw bytes: {searched:?}"
    );
    let (_, review) = on_a_terminal(&m, &["pull", &reference], "n\n");
    assert!(
        !raw(&review),
        "the review printed the raw bytes: {review:?}"
    );
    assert!(
        review.contains("\\u{202e}") || review.contains("\\x1b"),
        "{review}"
    );
}
