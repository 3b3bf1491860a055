//! `wpod kube build`: the runner image of one Wasm sidecar, an ordinary OCI image any node can
//! pull: wpod (this binary, or the one named) and the shared libraries it links, nothing else
//! of a system (no shell), the component at [`COMPONENT_PATH`] and its compiled code at
//! [`PRECOMPILED_DIR`] (so the container starts without compiling), the mount points `wpod kube
//! generate` gives the runner, and its unprivileged user. One layer, written reproducibly
//! (entries sorted, owned by 0:0, mtime 0): the same inputs give the same digest.
//!
//! Pushed to a registry (as `wpod push` pushes a sidecar: registries.conf, auth files), or
//! written as an OCI archive (`ctr images import`, `skopeo copy oci-archive:`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::generate::{COMPONENT_PATH, MANIFEST_DIR, RUNNER_BIN, RUNNER_UID, STATE_DIR};
use crate::oci::reference::ImageName;
use crate::oci::store::Digest;

/// Where the image holds the component's compiled code (`wpod sidecar run --precompiled`'s
/// default).
pub const PRECOMPILED_DIR: &str = "/wpod/precompiled";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The config label naming the component's digest (what `wpod kube generate` pins).
pub const COMPONENT_LABEL: &str = "dev.wpod.component.digest";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list the libraries {} links (ldd): {why}; the runner image needs them", binary.display())]
    Libraries { why: String, binary: PathBuf },
    #[error(transparent)]
    Sidecar(#[from] crate::sidecars::SidecarError),
    #[error(transparent)]
    Cache(#[from] crate::sidecars::cache::CacheError),
    #[error("{0} is not a Wasm component that runs as a sidecar: {1}")]
    Component(PathBuf, String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A built image: its blobs and manifest, in memory.
pub struct RunnerImage {
    pub layer: Vec<u8>,
    pub layer_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// The component's sha256 (`sha256:<hex>`).
    pub component_digest: String,
    /// The shared libraries (and loader) put beside a dynamically linked wpod: none for the
    /// static one `runner/build.sh` builds.
    pub shared_libraries: usize,
}

/// One file or directory of the layer.
enum Entry {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
}

/// Builds the runner image of `component` around the wpod binary `wpod`.
pub fn build(wpod: &Path, component: &Path) -> Result<RunnerImage, BuildError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| BuildError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let wasm = crate::files::read_regular(component, crate::files::MAX_COMPONENT_BYTES)
        .map_err(|e| BuildError::Component(component.to_path_buf(), e.to_string()))?;
    crate::sidecars::check_component_bytes(&wasm)
        .map_err(|e| BuildError::Component(component.to_path_buf(), e.to_string()))?;
    let component_digest = Digest::of(&wasm).to_string();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut add = |path: &str, entry: Entry| {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        entries.insert(path, entry);
    };
    add(
        RUNNER_BIN,
        Entry::File {
            bytes: read(wpod)?,
            mode: 0o755,
        },
    );
    let libs = libraries(wpod)?;
    let shared_libraries = libs.len();
    for lib in libs {
        let bytes = read(&lib)?;
        add(&lib.to_string_lossy(), Entry::File { bytes, mode: 0o755 });
    }
    add(
        COMPONENT_PATH,
        Entry::File {
            bytes: wasm,
            mode: 0o644,
        },
    );
    // Compiled by this wpod's engine, under a key of the image's own; readable by the runner's
    // user (the image is read-only: nobody can write an entry to match it), and made from the
    // component, so the same inputs give the same image.
    let compiled = tempdir()?;
    let key = Digest::of(format!("wpod runner image {component_digest}").as_bytes());
    let key_bytes = hex::decode(key.hex()).unwrap_or_default();
    // wpod's own file whatever the umask (a key others could write is refused).
    crate::files::write_new(&compiled.0.join("mac.key"), &key_bytes, 0o600).map_err(|source| {
        BuildError::Write {
            path: compiled.0.join("mac.key"),
            source,
        }
    })?;
    let engine = crate::sidecars::engine::shared().map_err(crate::sidecars::SidecarError::from)?;
    crate::sidecars::cache::precompile_into(engine, component, &compiled.0)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&compiled.0)
        .map_err(|source| BuildError::Read {
            path: compiled.0.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let bytes = read(&path)?;
        add(
            &format!("{PRECOMPILED_DIR}/{}", name.unwrap_or_default()),
            Entry::File { bytes, mode: 0o644 },
        );
    }
    add(MANIFEST_DIR, Entry::Dir);
    add(STATE_DIR, Entry::Dir);

    let layer = layer_tar(&entries).map_err(|source| BuildError::Write {
        path: PathBuf::from("<layer>"),
        source,
    })?;
    let layer_digest = Digest::of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": [RUNNER_BIN],
            "User": format!("{RUNNER_UID}:{RUNNER_UID}"),
            "Labels": {
                "org.opencontainers.image.title": "wpod-sidecar-runner",
                COMPONENT_LABEL: component_digest,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    }))
    .unwrap_or_default();
    let config_digest = Digest::of(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest.to_string(),
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Ok(RunnerImage {
        shared_libraries,
        digest: Digest::of(&manifest),
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
        component_digest,
    })
}

/// The shared libraries `binary` loads (and the dynamic loader), as `ldd` lists them.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let fail = |why: String| BuildError::Libraries {
        why,
        binary: binary.to_path_buf(),
    };
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary needs none.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
            || out.stderr.is_empty()
        {
            return Ok(Vec::new());
        }
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let mut libs: Vec<PathBuf> = text
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// The layer: a tar of `entries`, sorted, owned by 0:0, dated 0.
fn layer_tar(entries: &BTreeMap<String, Entry>) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Entry::File { bytes, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())?;
            }
        }
    }
    tar.into_inner()
}

/// The OCI name of this machine's architecture.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `image` as an OCI archive (an image layout in a tar) naming it `name`.
pub fn write_archive(image: &RunnerImage, name: &ImageName, path: &Path) -> Result<(), BuildError> {
    let fail = |source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": image.digest.to_string(),
            "size": image.manifest.len(),
            "annotations": {
                "io.containerd.image.name": name.canonical(),
                "org.opencontainers.image.ref.name": name.tag.clone().unwrap_or_else(|| "latest".into()),
            },
        }],
    });
    let files: [(String, &[u8]); 5] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        (
            "index.json".into(),
            &serde_json::to_vec(&index).unwrap_or_default(),
        ),
        (blob(image.digest.hex()), &image.manifest),
        (blob(image.config_digest.hex()), &image.config),
        (blob(image.layer_digest.hex()), &image.layer),
    ];
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(fail)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, name, bytes).map_err(fail)?;
    }
    let mut out = tar.into_inner().map_err(fail)?;
    out.flush().map_err(fail)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(fail)
}

fn blob(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

fn tempdir() -> Result<TempDir, BuildError> {
    let path = std::env::temp_dir().join(format!(
        "wpod-build-{}-{}",
        std::process::id(),
        crate::files::random_hex(4)
    ));
    std::fs::create_dir(&path).map_err(|source| BuildError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(TempDir(path))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
