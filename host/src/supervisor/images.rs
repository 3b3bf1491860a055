//! A pod's registry images, before anything of the pod exists: each pulled (or found in the
//! store) per its container's pull policy, and each Wasm sidecar among them checked against the
//! user's approvals. A pod whose image cannot be had, or whose sidecar's digest was never
//! reviewed, never starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::grants::inspect::ComponentReport;
use crate::oci::approvals::{Approvals, ApprovalsError, ArtifactKind, Decision};
use crate::oci::pull::{PullError, PullEvent, Pulled, Puller, StoredImage, StoredSidecar};
use crate::oci::reference::ImageName;
use crate::oci::store::{ImageRecord, Store};
use crate::plan::{Image, PodPlan, WasmComponent};

use super::events::{Event, Events};

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Approvals(#[from] ApprovalsError),
    #[error(
        "sidecar image {image} is {digest}, which has not been reviewed: see what it may do and \
         approve it with `wpod pull {image}`"
    )]
    NeverReviewed { image: String, digest: String },
    #[error(
        "sidecar image {image} now points to {digest}, which is not approved: compared with the \
         approved {approved} it imports more:\n{}\nreview and approve it with `wpod pull {image}`, \
         or pin the approved digest ({repository}@{approved})",
        lines.join("\n")
    )]
    NotApproved {
        image: String,
        repository: String,
        digest: String,
        approved: String,
        lines: Vec<String>,
    },
    #[error(
        "image {image} was reviewed as {reviewed} ({repository}@{approved}), but it now \
         resolves to {now} ({digest}), which would run with what that kind gets and was never \
         reviewed: pin the reviewed digest ({repository}@{approved}), or, if the repository now \
         holds another kind on purpose, remove its entries from {approvals}"
    )]
    KindChanged {
        image: String,
        repository: String,
        reviewed: ArtifactKind,
        approved: String,
        now: ArtifactKind,
        digest: String,
        approvals: String,
    },
}

/// What the pull found for each container, by container index.
pub struct PulledImages(Vec<Option<Pulled>>, BTreeMap<String, StoredImage>);

impl PulledImages {
    /// The component of each container whose registry image is a Wasm sidecar, by container
    /// path: what `PodPlan::with_pulled_sidecars` runs.
    pub fn sidecar_components(&self, plan: &PodPlan) -> BTreeMap<String, WasmComponent> {
        plan.containers
            .iter()
            .zip(&self.0)
            .filter_map(|(c, p)| match p {
                Some(Pulled::Sidecar(s)) => Some((
                    c.path.clone(),
                    WasmComponent {
                        path: s.component.clone(),
                        digest: Some(s.sidecar.component.clone()),
                        reference: Some(crate::plan::image::pinned(
                            &s.record.name,
                            s.record.digest.as_str(),
                        )),
                    },
                )),
                _ => None,
            })
            .collect()
    }

    pub fn records(&self) -> impl Iterator<Item = &ImageRecord> {
        self.0
            .iter()
            .flatten()
            .map(Pulled::record)
            .chain(self.1.values().map(|i| &i.record))
    }

    /// Each `image` volume's layers, by volume name.
    pub fn volume_layers(&self) -> BTreeMap<String, Vec<std::path::PathBuf>> {
        self.1
            .iter()
            .map(|(v, i)| (v.clone(), i.layers.clone()))
            .collect()
    }

    /// The container images, by container index (native containers run on them).
    pub fn container_images(self) -> Vec<Option<StoredImage>> {
        self.0
            .into_iter()
            .map(|p| match p {
                Some(Pulled::Container(i)) => Some(i),
                _ => None,
            })
            .collect()
    }
}

/// Pulls (or finds in the store) every registry image of the pod, per each container's pull
/// policy, and refuses a Wasm sidecar at a digest the user has not approved.
pub async fn pull_images(plan: &PodPlan, events: &Events) -> Result<PulledImages, ImagesError> {
    let mut out = Vec::new();
    let mut puller = None;
    let mut approvals = None;
    for c in &plan.containers {
        let Image::Registry { name, policy } = &c.image else {
            out.push(None);
            continue;
        };
        let puller = open_puller(&mut puller)?;
        let container = c.name();
        let report = |e: PullEvent| report_pull(events, Some(container), e);
        let pulled = puller
            .ensure(name, *policy, &report)
            .await
            .map_err(ImagesError::from)
            .and_then(|p| {
                let approvals = match &approvals {
                    Some(a) => a,
                    None => approvals.insert(Approvals::load()?),
                };
                match &p {
                    Pulled::Sidecar(s) => {
                        if let Some(message) = check_approved(name, s, approvals)? {
                            events.emit(Some(container), Event::Warning { message });
                        }
                    }
                    Pulled::Container(_) => check_kind(name, &p, approvals)?,
                }
                Ok(p)
            });
        match pulled {
            Ok(p) => out.push(Some(p)),
            Err(e) => {
                let (image, message) = (name.canonical(), crate::error::chain(&e));
                // A pull that failed, or an image the review refused: said as what it was.
                let event = match e {
                    ImagesError::Pull(_) => Event::ErrImagePull { image, message },
                    _ => Event::ImageRefused { image, message },
                };
                events.emit(Some(container), event);
                return Err(e);
            }
        }
    }
    // `image` volumes: container images, pulled and checked as a container's are.
    let mut volumes = BTreeMap::new();
    for v in &plan.volumes {
        let crate::plan::VolumeKind::Image { name, policy, .. } = &v.kind else {
            continue;
        };
        let puller = open_puller(&mut puller)?;
        let report = |e: PullEvent| report_pull(events, None, e);
        let pulled = match puller.ensure(name, *policy, &report).await {
            Ok(Pulled::Container(image)) => Ok(image),
            Ok(Pulled::Sidecar(_)) => Err(ImagesError::Pull(PullError::Invalid {
                image: name.canonical(),
                what: "is a Wasm sidecar, not an image a volume can hold".into(),
            })),
            Err(e) => Err(ImagesError::from(e)),
        };
        match pulled {
            Ok(image) => {
                volumes.insert(v.name.clone(), image);
            }
            Err(e) => {
                events.emit(
                    None,
                    Event::ErrImagePull {
                        image: name.canonical(),
                        message: crate::error::chain(&e),
                    },
                );
                return Err(e);
            }
        }
    }
    Ok(PulledImages(out, volumes))
}

impl ImagesError {
    /// See [`crate::oci::pull::PullError::retryable_image`].
    pub fn retryable_image(&self) -> Option<&str> {
        match self {
            ImagesError::Pull(e) => e.retryable_image(),
            _ => None,
        }
    }
}

/// The pod's one puller, opened (with the store) when its first image is pulled.
fn open_puller(slot: &mut Option<Puller>) -> Result<&mut Puller, ImagesError> {
    match slot {
        Some(p) => Ok(p),
        None => Ok(slot.insert(Puller::new(Arc::new(
            Store::open().map_err(PullError::from)?,
        ))?)),
    }
}

/// A container image from a repository whose reviews were of another kind (a sidecar's tag
/// repointed at a container image) is refused, naming both.
fn check_kind(name: &ImageName, pulled: &Pulled, approvals: &Approvals) -> Result<(), ImagesError> {
    let now = match pulled {
        Pulled::Sidecar(_) => ArtifactKind::Sidecar,
        Pulled::Container(_) => ArtifactKind::Container,
    };
    let repository = name.repository_name();
    match approvals.latest(&repository) {
        Some(reviewed) if reviewed.kind != now => Err(ImagesError::KindChanged {
            image: name.canonical(),
            reviewed: reviewed.kind,
            approved: reviewed.digest.to_string(),
            now,
            digest: pulled.record().digest.to_string(),
            approvals: approvals.path.display().to_string(),
            repository,
        }),
        _ => Ok(()),
    }
}

/// A pull's progress as the pod's event (kubelet's `Pulling`, `Pulled`, ...).
/// A pull's progress as the pod's events: of a container, or (`None`) of the pod (an `image`
/// volume's, which no container stands for).
fn report_pull(events: &Events, container: Option<&str>, e: PullEvent) {
    let event = match e {
        PullEvent::Pulling { image, from } => Event::Pulling { image, from },
        PullEvent::Pulled {
            image,
            digest,
            size,
            took,
        } => Event::Pulled {
            image,
            digest,
            size,
            seconds: took.as_secs_f64(),
        },
        PullEvent::AlreadyPresent { image } => Event::AlreadyPresent { image },
        PullEvent::MirrorFailed { mirror, message } => Event::MirrorFailed { mirror, message },
        PullEvent::Layer { .. } | PullEvent::Progress { .. } => return,
    };
    events.emit(container, event);
}

/// What a `wpod __pull` helper is asked to pull: `wpod apply`'s images, pulled by a process of
/// their own outside the pod's cgroup, so that no pull can take the memory of the running pod's
/// wpod (whose end would be the pod's).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PullRequest {
    pub pod: String,
    /// Container name, canonical image reference, pull policy.
    pub images: Vec<(String, String, String)>,
}

impl PullRequest {
    /// The registry images of `plan`'s containers.
    pub fn of(plan: &PodPlan) -> Self {
        PullRequest {
            pod: plan.name().to_string(),
            images: plan
                .containers
                .iter()
                .filter_map(|c| match &c.image {
                    Image::Registry { name, policy } => Some((
                        c.name().to_string(),
                        name.canonical(),
                        policy.as_str().to_string(),
                    )),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// Pulls what `request` names (per its pull policies), reporting to `events`: the work of the
/// `wpod __pull` helper. Approvals are checked by the pod when it plans with what was pulled.
pub async fn pull_only(request: &PullRequest, events: &Events) -> Result<(), ImagesError> {
    use crate::spec::PullPolicy;
    let puller = Puller::new(Arc::new(Store::open().map_err(PullError::from)?))?;
    for (container, image, policy) in &request.images {
        let name = ImageName::parse(image).map_err(|e| {
            ImagesError::Pull(PullError::Invalid {
                image: image.clone(),
                what: e.to_string(),
            })
        })?;
        let policy = match policy.as_str() {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        };
        let report = |e: PullEvent| report_pull(events, Some(container), e);
        if let Err(e) = puller.ensure(&name, policy, &report).await {
            events.emit(
                Some(container),
                Event::ErrImagePull {
                    image: name.canonical(),
                    message: crate::error::chain(&e),
                },
            );
            return Err(e.into());
        }
    }
    Ok(())
}

/// A sidecar runs only at a digest the user approved; a tag that moved is never run silently:
/// to a digest that imports more it is refused, to one that imports nothing more it runs with
/// a warning (returned) saying what changed.
fn check_approved(
    name: &ImageName,
    sidecar: &StoredSidecar,
    approvals: &Approvals,
) -> Result<Option<String>, ImagesError> {
    let repository = name.repository_name();
    let digest = &sidecar.record.digest;
    let decision = approvals.decide(
        &repository,
        name.tag.as_deref(),
        digest,
        &sidecar.sidecar.imports,
        crate::grants::always_granted,
    );
    let (last, diff) = match decision {
        Decision::Approved(_) => return Ok(None),
        Decision::New => {
            return Err(ImagesError::NeverReviewed {
                image: name.canonical(),
                digest: digest.to_string(),
            })
        }
        Decision::Upgrade {
            from,
            diff,
            increases: true,
        } => {
            return Err(ImagesError::NotApproved {
                image: name.canonical(),
                repository,
                digest: digest.to_string(),
                approved: from.digest.to_string(),
                lines: ComponentReport::diff_lines(&diff),
            })
        }
        Decision::Upgrade { from, diff, .. } => (from, diff),
    };
    // The same permissions or fewer: as Kubernetes runs a new digest of an image, wpod does,
    // and says what changed.
    let mut message = format!(
        "sidecar image {} moved from the approved {} to {digest}, which imports nothing more",
        name.canonical(),
        last.digest
    );
    for line in ComponentReport::diff_lines(&diff) {
        message.push('\n');
        message.push_str(&line);
    }
    Ok(Some(message))
}
