//! TLS done by the host for a sidecar (`wpod:sidecar/tls`): tls-proxy with its default engine
//! hands its connections to the host and relays plaintext; bodies arrive byte-exact, keep-alive
//! passes through, 120 clients at once queue past its connection limit instead of exhausting
//! its handles, a client that does not speak TLS is dropped without harm, and a sidecar that
//! brings its own TLS (the proxy's `guest` engine, rustls in Wasm) keeps working beside it. A key that does not parse stops the sidecar with an error naming the file. Needs root,
//! curl and openssl.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::pods::TestPod;
use crate::text;

const LONG: Duration = Duration::from_secs(60);
const HOST_TLS: u16 = 19621;
const GUEST_TLS: u16 = 19622;

/// A directory with a self-signed P-256 certificate for localhost (`tls.crt`, `tls.key`) and a
/// site (`site/`) holding a 1 MiB file of random bytes.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-e2e-{name}-files"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("site")).expect("fixture dir");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(dir.join("tls.key"))
            .arg("-out")
            .arg(dir.join("tls.crt"))
            .output()
            .expect("openssl");
        assert!(made.status.success(), "openssl: {}", text(&made.stderr));
        let mut big = vec![0u8; 1 << 20];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut big))
            .expect("random bytes");
        std::fs::write(dir.join("site/big.bin"), &big).expect("big.bin");
        std::fs::write(dir.join("site/small.txt"), "small and plain\n").expect("small.txt");
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` through the proxy on `port`, trusting the fixture's certificate.
fn curl(fixture: &Path, port: u16, args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "-S", "-f", "-m", "10", "--cacert"])
        .arg(fixture.join("tls.crt"))
        .args(args)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .output()
        .expect("curl")
}

#[test]
fn the_host_terminates_tls_for_a_sidecar_and_one_that_brings_its_own_still_works() {
    wpod_test_support::require_root("host-side TLS");
    let fixture = Fixture::new("tls-host");
    let pod = TestPod::new(
        "tls-host",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tls-host}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: web
    command: [python3, -m, http.server, "8000", --bind, 127.0.0.1, --protocol, HTTP/1.1]
    workingDir: /srv
    volumeMounts: [{{name: site, mountPath: /srv}}]
    readinessProbe:
      tcpSocket: {{port: 8000}}
      periodSeconds: 1
  - name: tls
    image: SIDECARS/tls-proxy.wasm
    env:
    - {{name: LISTEN, value: "0.0.0.0:8443"}}
    - {{name: BACKEND, value: "127.0.0.1:8000"}}
    ports: [{{containerPort: 8443, hostPort: {HOST_TLS}, hostIP: 127.0.0.1}}]
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
    resources: {{limits: {{memory: 32Mi}}}}
  - name: tls-guest
    image: SIDECARS/tls-proxy.wasm
    env:
    - {{name: LISTEN, value: "0.0.0.0:8444"}}
    - {{name: BACKEND, value: "127.0.0.1:8000"}}
    - {{name: TLS_ENGINE, value: guest}}
    ports: [{{containerPort: 8444, hostPort: {GUEST_TLS}, hostIP: 127.0.0.1}}]
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
    resources: {{limits: {{memory: 32Mi}}}}
  volumes:
  - name: tls
    hostPath: {{path: {dir}, type: Directory}}
  - name: site
    hostPath: {{path: {dir}/site, type: Directory}}
"#,
            dir = fixture.dir.display()
        ),
    );
    let running = pod.spawn();
    running.wait_for("the web server and both proxies", LONG, |r| {
        r.events(Some("web")).iter().any(|e| e["event"] == "ready")
            && r.has_line("tls", "terminating TLS (in the host)")
            && r.has_line("tls-guest", "terminating TLS (in Wasm)")
    });

    // A 1 MiB body arrives byte-exact through the host's TLS.
    let got = fixture.path("got.bin");
    let out = curl(
        &fixture.dir,
        HOST_TLS,
        &[
            &format!("https://localhost:{HOST_TLS}/big.bin"),
            "-o",
            got.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "curl big.bin: {}", text(&out.stderr));
    assert!(
        std::fs::read(&got).ok() == std::fs::read(fixture.path("site/big.bin")).ok(),
        "the body through the proxy differs from the file"
    );

    // Keep-alive passes through: the second request reuses the first one's connection.
    let url = format!("https://localhost:{HOST_TLS}/small.txt");
    let out = curl(
        &fixture.dir,
        HOST_TLS,
        &["-w", " connects=%{num_connects}\n", &url, &url],
    );
    let answer = text(&out.stdout);
    assert!(out.status.success(), "curl twice: {}", text(&out.stderr));
    assert_eq!(answer.matches("small and plain").count(), 2, "{answer:?}");
    assert!(
        answer.contains("connects=1") && answer.contains("connects=0"),
        "the second request should reuse the connection: {answer:?}"
    );

    // 120 clients at once, past the proxy's MAX_CONNECTIONS (64) and what its handle budget
    // would hold: the rest wait in the listen backlog until a connection ends, none fails, the
    // sidecar never traps. (`Connection: close`: curl keeps idle connections, and their slots,
    // until all its transfers are done.)
    let mut many = vec![
        "--parallel",
        "--parallel-max",
        "120",
        "-H",
        "Connection: close",
        "-w",
        "%{http_code}\n",
    ];
    for _ in 0..120 {
        many.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&fixture.dir, HOST_TLS, &many);
    let codes = text(&out.stdout);
    assert_eq!(
        codes.lines().filter(|c| *c == "200").count(),
        120,
        "{codes} {}",
        text(&out.stderr)
    );

    // A client that does not speak TLS gets its connection closed; the proxy serves on.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", HOST_TLS)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(
        !text(&rest).contains("small and plain") && !text(&rest).contains("HTTP/1"),
        "plain HTTP got an answer: {:?}",
        text(&rest)
    );
    running.wait_for("the failed handshake logged", LONG, |r| {
        r.has_line("tls", "TLS handshake")
    });
    let out = curl(&fixture.dir, HOST_TLS, &[&url]);
    assert!(
        out.status.success() && text(&out.stdout).contains("small and plain"),
        "after a bad client: {}",
        text(&out.stderr)
    );

    // The sidecar that brings its own TLS (rustls in Wasm) answers as well.
    let out = curl(
        &fixture.dir,
        GUEST_TLS,
        &[&format!("https://localhost:{GUEST_TLS}/small.txt")],
    );
    assert!(
        out.status.success() && text(&out.stdout).contains("small and plain"),
        "guest engine: {}",
        text(&out.stderr)
    );

    running.signal(libc::SIGINT);
    let run = running.wait(LONG);
    for proxy in ["tls", "tls-guest"] {
        assert_eq!(run.exit(proxy)["code"], 0, "{proxy}: {}", run.dump());
        // Started once: it never trapped (out of handles) and restarted.
        let starts = run
            .events(Some(proxy))
            .iter()
            .filter(|e| e["event"] == "started")
            .count();
        assert_eq!(starts, 1, "{proxy}: {}", run.dump());
    }
    crate::pods::assert_no_leftovers("tls-host");
}

#[test]
fn a_key_that_does_not_parse_stops_the_proxy_with_the_reason() {
    wpod_test_support::require_root("host-side TLS, a bad key");
    let fixture = Fixture::new("tls-badkey");
    // The certificate where the key should be: PEM, but no private key in it.
    let pod = TestPod::new(
        "tls-badkey",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tls-badkey}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sleep, "3"]
  - name: tls
    image: SIDECARS/tls-proxy.wasm
    env:
    - {{name: LISTEN, value: "0.0.0.0:8443"}}
    - {{name: KEY, value: /tls/tls.crt}}
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
  - name: tls-badmax
    image: SIDECARS/tls-proxy.wasm
    env:
    - {{name: LISTEN, value: "0.0.0.0:8444"}}
    - {{name: MAX_CONNECTIONS, value: "lots"}}
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
  volumes:
  - name: tls
    hostPath: {{path: {dir}, type: Directory}}
"#,
            dir = fixture.dir.display()
        ),
    );
    let run = pod.run(LONG);
    run.assert_line(
        "tls",
        "cannot load TLS configuration: CERT=/tls/tls.crt KEY=/tls/tls.crt: private key: no PEM private key",
    );
    assert_eq!(run.exit("tls")["code"], 1, "{}", run.dump());
    // A setting that does not parse is named with its fix, not replaced by a default.
    run.assert_line(
        "tls-badmax",
        "MAX_CONNECTIONS=\"lots\": set the sidecar's env MAX_CONNECTIONS",
    );
    assert_eq!(run.exit("tls-badmax")["code"], 1, "{}", run.dump());
}
