//! Image resolution, decided in one place: what a container's `image` means to wpod.
//!
//! - absent: a program already on the host; its `command` runs on the host filesystem inside the
//!   pod's namespaces (wpod's one departure from Kubernetes);
//! - a path ending in `.wasm` (relative to the manifest): a Wasm component, run as a sandboxed
//!   sidecar in wasmtime;
//! - a directory beside the manifest, or a path starting with `.` or `/`: a rootfs the native
//!   container runs on;
//! - anything else: an image in an OCI registry (`nginx`, `registry.example:5000/team/app:v2`),
//!   pulled into wpod's store before the pod starts.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::component::{COMPONENT_PREAMBLE, MODULE_PREAMBLE};
use crate::oci::reference::{BadReference, ImageName};
use crate::oci::store::Digest;
use crate::spec::PullPolicy;

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "camelCase")]
pub enum Image {
    /// A native process on the host filesystem.
    Host,
    /// A native process on this root directory.
    Rootfs(PathBuf),
    /// A Wasm component run by wasmtime.
    Wasm(WasmComponent),
    /// An image from a registry, and when to pull it.
    Registry {
        #[serde(serialize_with = "canonical")]
        name: ImageName,
        policy: PullPolicy,
    },
}

/// A Wasm sidecar's component: a file, and the digest it must have when it was pulled and
/// reviewed (checked as it is loaded, with the hash loading computes anyway).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WasmComponent {
    pub path: PathBuf,
    /// The component's layer digest, for a pulled sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// A pulled sidecar's reference pinned to its manifest digest (`REF@sha256:...`, what
    /// `wpod push` printed and what `ps` shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl WasmComponent {
    /// A component file beside the manifest: whatever it holds is what the user named.
    pub fn file(path: PathBuf) -> Self {
        WasmComponent {
            path,
            digest: None,
            reference: None,
        }
    }
}

/// How a component file is named to the user (`ps`, compile events): its file name.
pub fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `name` pinned to `digest`, unless it names a digest already.
pub fn pinned(name: &str, digest: &str) -> String {
    if name.contains('@') {
        name.to_string()
    } else {
        format!("{name}@{digest}")
    }
}

fn canonical<S: serde::Serializer>(name: &ImageName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&name.canonical())
}

impl Image {
    pub fn is_wasm(&self) -> bool {
        matches!(self, Image::Wasm(_))
    }
}

/// Why an `image` names nothing wpod can run; each message says where wpod looked and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("must not be empty; omit image to run a program from the host")]
    Empty,
    #[error(
        "image \"{image}\" resolves to nothing: no rootfs directory at {}. A path is a rootfs \
         directory relative to the manifest; write an image name (such as nginx:1.25) for an \
         image from a registry",
        looked.display()
    )]
    Nothing { image: String, looked: PathBuf },
    #[error(transparent)]
    Reference(#[from] BadReference),
    #[error("Wasm component \"{image}\" not found at {} (paths are relative to the manifest)", path.display())]
    ComponentMissing { image: String, path: PathBuf },
    /// The message includes the OS error: no source, so the chain says it once.
    #[error("cannot read Wasm component: {0}")]
    Read(crate::files::ReadError),
    #[error(
        "{} is a core Wasm module, not a component: build the sidecar for wasm32-wasip2 \
         (or make it one: `wpod component new MODULE -o COMPONENT`)",
        .0.display()
    )]
    CoreModule(PathBuf),
    #[error("{} is not a Wasm component (bad header)", .0.display())]
    NotComponent(PathBuf),
}

/// Resolves `image` against the manifest's directory; the error says where wpod looked.
/// `pull_policy` is the container's `imagePullPolicy` (Kubernetes' default when absent).
pub fn resolve(
    image: Option<&str>,
    pull_policy: Option<PullPolicy>,
    manifest_dir: &Path,
) -> Result<Image, ImageError> {
    let Some(image) = image else {
        return Ok(Image::Host);
    };
    if image.is_empty() {
        return Err(ImageError::Empty);
    }
    // Messages show the path as the user can find it from where they ran wpod.
    let shown = manifest_dir.join(image);
    let path = absolute(&shown);
    if image.ends_with(".wasm") {
        return check_component(image, &shown).map(|()| Image::Wasm(WasmComponent::file(path)));
    }
    if path.is_dir() {
        return Ok(Image::Rootfs(path));
    }
    if image.starts_with('.') || image.starts_with('/') {
        return Err(ImageError::Nothing {
            image: image.to_string(),
            looked: shown,
        });
    }
    let name = ImageName::parse(image)?;
    Ok(Image::Registry {
        policy: pull_policy.unwrap_or_else(|| name.default_pull_policy()),
        name,
    })
}

/// Whether `path` is a Wasm component (by its header), with what to do if it is not; `image`
/// is how the user named it.
pub fn check_component(image: &str, path: &Path) -> Result<(), ImageError> {
    let mut head = [0u8; 8];
    // Only a regular file: a FIFO or a device named as an image must not hang validation.
    let read = crate::files::open_regular(path).and_then(|mut f| {
        std::io::Read::read_exact(&mut f, &mut head).map_err(|error| crate::files::ReadError::Io {
            path: path.to_path_buf(),
            error,
        })
    });
    match read {
        Err(e) if e.is_not_found() => Err(ImageError::ComponentMissing {
            image: image.to_string(),
            path: path.to_path_buf(),
        }),
        Err(e) => Err(ImageError::Read(e)),
        Ok(()) if head == COMPONENT_PREAMBLE => Ok(()),
        Ok(()) if head == MODULE_PREAMBLE => Err(ImageError::CoreModule(path.to_path_buf())),
        Ok(()) => Err(ImageError::NotComponent(path.to_path_buf())),
    }
}

/// `path` made absolute without resolving symlinks (so messages show what the user wrote).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_each_kind() {
        let dir = std::env::temp_dir().join(format!("wpod-image-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::write(dir.join("c.wasm"), COMPONENT_PREAMBLE).unwrap();
        std::fs::write(dir.join("m.wasm"), MODULE_PREAMBLE).unwrap();
        let ok = |image: &str| resolve(Some(image), None, &dir).ok();
        let err = |image: &str| resolve(Some(image), None, &dir).unwrap_err().to_string();
        assert_eq!(resolve(None, None, &dir).ok(), Some(Image::Host));
        assert_eq!(ok("root"), Some(Image::Rootfs(dir.join("root"))));
        assert_eq!(ok("./root"), Some(Image::Rootfs(dir.join("./root"))));
        assert_eq!(
            ok("c.wasm"),
            Some(Image::Wasm(WasmComponent::file(dir.join("c.wasm"))))
        );
        assert!(err("m.wasm").contains("core Wasm module"));
        assert!(err("gone.wasm").contains("not found"));
        assert!(err("./gone").contains("resolves to nothing"));
        assert!(err("Not An Image!").contains("not an image reference"));
        let Some(Image::Registry { name, policy }) = ok("nginx:1.25") else {
            panic!("a registry image")
        };
        assert_eq!(name.canonical(), "docker.io/library/nginx:1.25");
        assert_eq!(policy, PullPolicy::IfNotPresent);
        let pinned = resolve(Some("nginx"), Some(PullPolicy::Never), &dir).unwrap();
        assert!(matches!(
            pinned,
            Image::Registry {
                policy: PullPolicy::Never,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
