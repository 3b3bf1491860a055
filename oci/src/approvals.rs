//! What the user approved a Wasm sidecar to do: per repository, the digests reviewed and the
//! imports each had. A pod runs a sidecar from a registry only at an approved digest; an
//! upgrade is compared with the repository's last approval (`component::ImportDiff`), and only
//! one that adds imports needs a new one.
//!
//! The file is `$WPOD_APPROVALS`, else `$WPOD_ROOT/approvals.json`: JSON a team can check into
//! a repository so CI runs what was reviewed (`wpod pull --yes` writes it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::Digest;
use crate::component::ImportDiff;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApprovalsError {
    #[error("cannot {step} the approvals file {}: {error}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{}: not a wpod approvals file ({message}); fix it or remove it to review the sidecars again",
        path.display()
    )]
    Parse { path: PathBuf, message: String },
}

/// What a reviewed artifact was: a pod entry whose reference later resolves to another kind is
/// refused (a publisher repointing an approved sidecar's tag at a container image would
/// otherwise get a root process with the pod's volumes, unreviewed).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactKind {
    /// A Wasm sidecar (every approval before kinds were recorded was one).
    #[default]
    Sidecar,
    /// A container image, run as a native process.
    Container,
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactKind::Sidecar => "a Wasm sidecar",
            ArtifactKind::Container => "a container image",
        })
    }
}

/// One reviewed digest of a repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `registry.example:5000/team/exporter`
    pub repository: String,
    pub digest: Digest,
    /// What was reviewed.
    #[serde(default)]
    pub kind: ArtifactKind,
    /// The tag it was pulled by, for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub imports: Vec<String>,
    /// RFC 3339.
    pub approved_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    approvals: Vec<Approval>,
}

#[derive(Debug)]
pub struct Approvals {
    pub path: PathBuf,
    file: File,
}

/// What the approvals say about one digest of a repository.
#[derive(Clone, Debug)]
pub enum Decision<'a> {
    /// This very digest was approved.
    Approved(&'a Approval),
    /// Nothing of the repository was ever reviewed.
    New,
    /// Another digest was: compared with the approval of the same tag (else the repository's
    /// latest), the imports changed this way; `increases` when it may do more.
    Upgrade {
        from: &'a Approval,
        diff: ImportDiff,
        increases: bool,
    },
}

impl Decision<'_> {
    /// Whether someone must approve it before a pod runs it.
    pub fn needs_approval(&self) -> bool {
        match self {
            Decision::Approved(_) => false,
            Decision::New => true,
            Decision::Upgrade { increases, .. } => *increases,
        }
    }
}

impl Approvals {
    /// The decision for `digest` of `repository` (pulled by `tag`), which imports `imports`;
    /// `harmless` names the imports every sidecar has anyway (adding them is no increase).
    pub fn decide(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: &Digest,
        imports: &[String],
        harmless: impl Fn(&str) -> bool,
    ) -> Decision<'_> {
        if let Some(a) = self.of(repository, digest) {
            return Decision::Approved(a);
        }
        let same_tag = self
            .file
            .approvals
            .iter()
            .rev()
            .find(|a| a.repository == repository && tag.is_some() && a.tag.as_deref() == tag);
        match same_tag.or_else(|| self.latest(repository)) {
            None => Decision::New,
            Some(from) => {
                let diff = ImportDiff::between(&from.imports, imports);
                Decision::Upgrade {
                    increases: diff.increases(harmless),
                    from,
                    diff,
                }
            }
        }
    }

    /// Where approvals are kept: `$WPOD_APPROVALS`, else `$WPOD_ROOT/approvals.json`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("WPOD_APPROVALS")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::files::state_root().join("approvals.json"))
    }

    pub fn load() -> Result<Self, ApprovalsError> {
        Self::load_from(Self::default_path())
    }

    /// The approvals at `path`; none yet when it does not exist.
    pub fn load_from(path: PathBuf) -> Result<Self, ApprovalsError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Approvals {
                    path,
                    file: File {
                        version: VERSION,
                        approvals: Vec::new(),
                    },
                })
            }
            Err(error) => {
                return Err(ApprovalsError::Io {
                    step: "read",
                    path,
                    error,
                })
            }
        };
        let file: File = serde_json::from_str(&text).map_err(|e| ApprovalsError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if file.version != VERSION {
            return Err(ApprovalsError::Parse {
                path,
                message: format!(
                    "version {} (this wpod reads version {VERSION})",
                    file.version
                ),
            });
        }
        Ok(Approvals { path, file })
    }

    /// The approval of exactly this digest of `repository`.
    pub fn of(&self, repository: &str, digest: &Digest) -> Option<&Approval> {
        self.file
            .approvals
            .iter()
            .find(|a| a.repository == repository && &a.digest == digest)
    }

    /// An approvals file (this format) holding `approvals`: what a pod's runners on a cluster
    /// check (`wpod kube generate` writes the exact approval of each of its sidecars).
    pub fn file_of(approvals: Vec<Approval>) -> String {
        let file = File {
            version: VERSION,
            approvals,
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// The repository's most recent approval: what an upgrade is compared with.
    pub fn latest(&self, repository: &str) -> Option<&Approval> {
        self.file
            .approvals
            .iter()
            .rev()
            .find(|a| a.repository == repository)
    }

    /// Records `approval` (moving an earlier approval of the same digest to the end) and saves.
    /// The file is read again under a lock first, so concurrent pulls lose no approval.
    pub fn approve(&mut self, approval: Approval) -> Result<(), ApprovalsError> {
        let io = |step, error| ApprovalsError::Io {
            step,
            path: self.path.clone(),
            error,
        };
        // A checked-in file is often a symlink: write where it points, keep the link.
        let target = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        // The lock lives in wpod's root, not beside a file checked into someone's repository.
        let root = crate::files::private_state_dir("")
            .map_err(|e| io("lock", std::io::Error::other(e.to_string())))?;
        let lock =
            crate::files::open_lock(&root.join("approvals.lock")).map_err(|e| io("lock", e))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(io("lock", std::io::Error::last_os_error()));
        }
        self.file = Self::load_from(target.clone())?.file;
        self.file
            .approvals
            .retain(|a| !(a.repository == approval.repository && a.digest == approval.digest));
        self.file.approvals.push(approval);
        let mut text = serde_json::to_string_pretty(&self.file).unwrap_or_default();
        text.push('\n');
        // Written beside and renamed: a crash never leaves half a file.
        let tmp = target.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &target).map_err(|e| io("replace", e))?;
        drop(lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_survive_a_reload_and_the_latest_wins() {
        let dir = std::env::temp_dir().join(format!("wpod-approvals-{}", std::process::id()));
        let path = dir.join("approvals.json");
        let mut a = Approvals::load_from(path.clone()).unwrap();
        let d1 = Digest::of(b"one");
        let d2 = Digest::of(b"two");
        for d in [&d1, &d2] {
            a.approve(Approval {
                repository: "reg/x".into(),
                digest: d.clone(),
                kind: ArtifactKind::Sidecar,
                tag: None,
                imports: vec![],
                approved_at: "2026-01-01T00:00:00Z".into(),
            })
            .unwrap();
        }
        let b = Approvals::load_from(path.clone()).unwrap();
        assert!(b.of("reg/x", &d1).is_some());
        assert!(b.of("reg/y", &d1).is_none());
        assert_eq!(b.latest("reg/x").unwrap().digest, d2);
        std::fs::write(&path, "{").unwrap();
        let e = Approvals::load_from(path.clone()).unwrap_err().to_string();
        assert!(
            e.contains("approvals.json") && e.contains("remove it"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
