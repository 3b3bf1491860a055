//! A test certificate authority made with openssl: a CA and one leaf certificate it signed for
//! the names and addresses a test serves TLS on. Files in a directory the test owns.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// `sans`: the leaf's subjectAltName entries, as openssl writes them (`IP:127.0.0.1`,
    /// `DNS:collector.example.test`); the first names its subject too.
    pub fn new(dir: &Path, sans: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("CA dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (install it: .ci/setup)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = "ec_paramgen_curve:prime256v1";
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            key,
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wpod-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        let cn = sans
            .first()
            .and_then(|s| s.split_once(':'))
            .map_or("leaf", |(_, v)| v);
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            key,
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ]);
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .expect("leaf.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ]);
        TestCa {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate a client is told to trust.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn leaf_cert(&self) -> PathBuf {
        self.dir.join("leaf.crt")
    }

    pub fn leaf_key(&self) -> PathBuf {
        self.dir.join("leaf.key")
    }
}
