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

use crate::pods::{TestDir, TestPod};
use crate::text;

const LONG: Duration = Duration::from_secs(60);

/// A directory with a self-signed P-256 certificate for localhost (`tls.crt`, `tls.key`) and a
/// site (`site/`) holding a 1 MiB file of random bytes.
struct Fixture {
    dir: PathBuf,
    _cleanup: TestDir,
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
        Fixture {
            _cleanup: TestDir(dir.clone()),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
    let (host_tls, guest_tls) = (crate::free_port(), crate::free_port());
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
    # python's http.server with a listen backlog for the proxy's 64 connections at once: its
    # default of 5 drops SYNs when a busy machine slows its accept loop, and a request then
    # waits out TCP's retransmissions (1, 3, 7, 15 s) past curl's limit.
    command: [python3, -c]
    args:
    - |
      import functools, http.server as h
      h.ThreadingHTTPServer.request_queue_size = 511
      h.SimpleHTTPRequestHandler.protocol_version = "HTTP/1.1"
      handler = functools.partial(h.SimpleHTTPRequestHandler, directory="/srv")
      h.ThreadingHTTPServer(("127.0.0.1", 8000), handler).serve_forever()
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
    ports: [{{containerPort: 8443, hostPort: {host_tls}, hostIP: 127.0.0.1}}]
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
    resources: {{limits: {{memory: 32Mi}}}}
  - name: tls-guest
    image: SIDECARS/tls-proxy.wasm
    env:
    - {{name: LISTEN, value: "0.0.0.0:8444"}}
    - {{name: BACKEND, value: "127.0.0.1:8000"}}
    - {{name: TLS_ENGINE, value: guest}}
    ports: [{{containerPort: 8444, hostPort: {guest_tls}, hostIP: 127.0.0.1}}]
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
        host_tls,
        &[
            &format!("https://localhost:{host_tls}/big.bin"),
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
    let url = format!("https://localhost:{host_tls}/small.txt");
    let out = curl(
        &fixture.dir,
        host_tls,
        &["-w", " connects=%{num_connects}\n", &url, &url],
    );
    let answer = text(&out.stdout);
    assert!(out.status.success(), "curl twice: {}", text(&out.stderr));
    assert_eq!(answer.matches("small and plain").count(), 2, "{answer:?}");
    assert!(
        answer.contains("connects=1") && answer.contains("connects=0"),
        "the second request should reuse the connection: {answer:?}"
    );

    // The host picks the suite, not the client: offered OpenSSL's order (AES-256 first), it
    // answers with AES-128-GCM on a CPU with AES instructions, ChaCha20 without.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let expected = match flags.contains(&"aes") && flags.contains(&"pclmulqdq") {
        true => "TLS_AES_128_GCM_SHA256",
        false => "TLS_CHACHA20_POLY1305_SHA256",
    };
    let out = curl(
        &fixture.dir,
        host_tls,
        &[
            "-v",
            "--tls13-ciphers",
            "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
            "-o",
            "/dev/null",
            &url,
        ],
    );
    let said = text(&out.stderr);
    assert!(
        out.status.success() && said.contains(&format!("TLSv1.3 / {expected}")),
        "expected {expected}: {said}"
    );

    // 120 clients at once, past the proxy's MAX_CONNECTIONS (64) and what its handle budget
    // would hold: the rest wait in the listen backlog until a connection ends, none fails, the
    // sidecar never traps. (`Connection: close`: curl keeps idle connections, and their slots,
    // until all its transfers are done.)
    // The last of them waits for 119 handshakes and requests before it: on a machine busy with
    // the rest of the suite that took over curl's usual 10 s once (one request of 120 timed
    // out, the others served), so this burst gets a minute; a hang still fails it.
    let mut many = vec![
        "-m",
        "60",
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
    let out = curl(&fixture.dir, host_tls, &many);
    let codes = text(&out.stdout);
    assert_eq!(
        codes.lines().filter(|c| *c == "200").count(),
        120,
        "{codes} {}",
        text(&out.stderr)
    );

    // A client that does not speak TLS gets its connection closed; the proxy serves on.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", host_tls)).expect("connect");
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
    let out = curl(&fixture.dir, host_tls, &[&url]);
    assert!(
        out.status.success() && text(&out.stdout).contains("small and plain"),
        "after a bad client: {}",
        text(&out.stderr)
    );

    // The sidecar that brings its own TLS (rustls in Wasm) answers as well.
    let out = curl(
        &fixture.dir,
        guest_tls,
        &[&format!("https://localhost:{guest_tls}/small.txt")],
    );
    assert!(
        out.status.success() && text(&out.stdout).contains("small and plain"),
        "guest engine: {}",
        text(&out.stderr)
    );

    let run = running.stop(LONG);
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

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz
}

/// Issue 23, finding G: handshakes with an RSA-4096 key cost the host milliseconds of CPU each;
/// clients opening them as fast as they can once cost wpod 17 CPU-seconds per 4,000. The host's
/// time in a sidecar's handshakes is now metered against the sidecar's CPU limit (`100m` here),
/// so the flood makes handshakes wait, not wpod burn a core. And (finding 14) clients that
/// connect and say nothing are dropped after a few seconds, without taking the slots of the
/// sessions that work.
#[test]
fn handshake_cpu_is_held_to_the_sidecars_cpu_limit_and_silence_to_seconds() {
    wpod_test_support::require_root("handshake CPU");
    let dir = std::env::temp_dir().join("wpod-e2e-tls-cpu-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("site")).unwrap();
    let _cleanup = TestDir(dir.clone());
    std::fs::write(dir.join("site/small.txt"), "small and plain\n").unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:4096", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {}", text(&made.stderr));
    let port = crate::free_port();
    let pod = TestPod::new(
        "tls-cpu",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tls-cpu}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    command: [python3, -m, http.server, "8000", --bind, 127.0.0.1]
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
    ports: [{{containerPort: 8443, hostPort: {port}, hostIP: 127.0.0.1}}]
    volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
    resources: {{limits: {{memory: 8Mi, cpu: 100m}}}}
  volumes:
  - {{name: tls, hostPath: {{path: {dir}}}}}
  - {{name: site, hostPath: {{path: {dir}/site}}}}
"#,
            dir = dir.display()
        ),
    );
    let running = pod.spawn();
    // Serving: the backend answers (its readiness) and the proxy listens (it says so once bound).
    running.wait_for("the web server and the proxy", LONG, |r| {
        r.events(Some("web")).iter().any(|e| e["event"] == "ready")
            && r.has_line("tls", "terminating TLS (in the host)")
    });
    // A session that works, made before the silent clients come.
    let session = format!(
        "import socket, ssl, sys\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=20))\n\
         print('connected', flush=True)\n\
         sys.stdin.readline()\n\
         t.sendall(b'GET /small.txt HTTP/1.0\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = t.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print('body', data.split(b'\\r\\n\\r\\n', 1)[-1].decode().strip(), flush=True)\n"
    );
    let mut held = Command::new("python3")
        .args(["-c", &session])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut held_out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut held_out, &mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    // Silent clients: 64 connections that never send a byte (an 8Mi sidecar's TLS has fewer
    // handshake slots than that). The session made before keeps working, a new client waits
    // its turn (seconds) rather than being refused, and the silent ones are dropped.
    let silent: Vec<std::net::TcpStream> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    held.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut held_out, &mut line).unwrap();
    let _ = held.wait();
    assert_eq!(
        line.trim(),
        "body small and plain",
        "the working session stalled"
    );
    let page = Command::new("curl")
        .args(["-s", "-S", "-k", "-m", "20"])
        .arg(format!("https://127.0.0.1:{port}/small.txt"))
        .output()
        .expect("curl");
    assert_eq!(
        text(&page.stdout),
        "small and plain\n",
        "a client got nothing while silent ones waited: {}",
        text(&page.stderr)
    );
    let dropped = silent
        .into_iter()
        .filter(|s| {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
            matches!(s.read(&mut [0u8; 1]), Ok(0) | Err(_))
        })
        .count();
    assert_eq!(dropped, 64, "silent clients were kept");
    // The flood: eight clients handshaking as fast as they can for six seconds.
    let flood = format!(
        "import socket, ssl, threading, time\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         done = [0]\n\
         def run():\n\
         \x20   end = time.time() + 6\n\
         \x20   while time.time() < end:\n\
         \x20       try:\n\
         \x20           s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n\
         \x20           t = ctx.wrap_socket(s); done[0] += 1; t.close()\n\
         \x20       except Exception:\n\
         \x20           pass\n\
         ts = [threading.Thread(target=run) for _ in range(8)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\n\
         print(done[0])\n"
    );
    let before = cpu_seconds(running.pid());
    let out = Command::new("python3")
        .args(["-c", &flood])
        .output()
        .expect("python3");
    let used = cpu_seconds(running.pid()) - before;
    let handshakes: u64 = text(&out.stdout).trim().parse().unwrap_or(0);
    let run = running.output();
    drop(running);
    // 100m for about 6 s is 0.6 CPU-seconds of handshakes (plus a second's burst and the
    // relaying around them); unmetered, the flood took several.
    assert!(
        used < 2.0,
        "wpod used {used:.2} CPU-seconds for {handshakes} RSA-4096 handshakes in 6 s\n{}",
        run.dump()
    );
    assert!(
        handshakes > 0,
        "no handshake completed: {}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
