//! Reading a pod's event journal (`events.jsonl`, written by [`super::events::Events`]): the
//! pod's and each container's current state, folded from the events alone, for `wpod ps`.
//!
//! The journal is bounded: past [`MAX_JOURNAL_BYTES`] the writer moves it to `events.jsonl.1`
//! (the one before is dropped) and starts the new file with a `snapshot` record, the state
//! folded so far, from which reading starts. A crash loop once grew it by 7.8 MB in ten minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use super::api::{ContainerState, ContainerView, PodPhase, PodView};
use super::api::{Event, EventRecord, Record, VERSION};

/// Why a container that never ran waits, as kubectl says it (derived when the journal is read).
const WAIT_INITIALIZING: &str = "PodInitializing";
const WAIT_CREATING: &str = "ContainerCreating";

/// The size past which the journal is rotated.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 20;

/// The rotated journal beside `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

/// Why a journal cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: written by a newer wpod (record version {version}; this wpod reads {VERSION}): use the wpod that runs the pod")]
    Newer { path: PathBuf, version: u32 },
}

/// The records of a journal file (lines that are not records are skipped: a line being
/// written, or a file cut short by a full disk).
fn records(path: &Path) -> Result<Vec<Record>, JournalError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        if record.version() > VERSION {
            return Err(JournalError::Newer {
                path: path.to_path_buf(),
                version: record.version(),
            });
        }
        out.push(record);
    }
    Ok(out)
}

/// The journal's events, oldest first: the rotated file's, then the current one's.
pub fn events(path: &Path) -> Result<Vec<EventRecord>, JournalError> {
    let mut out = Vec::new();
    for file in [rotated(path), path.to_path_buf()] {
        out.extend(records(&file)?.into_iter().filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        }));
    }
    Ok(out)
}

/// The events among journal lines (what `wpod events -f` reads as the journal grows).
pub fn parse_events(text: &str) -> Result<Vec<EventRecord>, JournalError> {
    let mut out = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Record>(line) {
            Ok(r) if r.version() > VERSION => {
                return Err(JournalError::Newer {
                    path: PathBuf::from("the journal"),
                    version: r.version(),
                })
            }
            Ok(Record::Event(e)) => out.push(e),
            _ => {}
        }
    }
    Ok(out)
}

/// The view of the pod `name` from the journal at `path`.
pub fn read(name: &str, path: &Path) -> Result<PodView, JournalError> {
    let mut pod = PodView {
        name: name.to_string(),
        phase: PodPhase::Starting,
        ..Default::default()
    };
    let mut containers: BTreeMap<String, ContainerView> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for record in records(path)? {
        let e = match record {
            Record::Snapshot(s) => {
                let view = s.view;
                containers.clear();
                order = view.containers.iter().map(|c| c.name.clone()).collect();
                containers.extend(view.containers.into_iter().map(|mut c| {
                    // Why a container waits is derived at the end, from what follows.
                    if matches!(c.reason.as_deref(), Some(WAIT_INITIALIZING | WAIT_CREATING)) {
                        c.reason = None;
                    }
                    (c.name.clone(), c)
                }));
                pod = PodView {
                    containers: Vec::new(),
                    ..view
                };
                continue;
            }
            Record::Event(e) => e,
            Record::Summary(_) | Record::Log(_) => continue,
        };
        let Some(container) = e.container else {
            match e.event {
                Event::PodPlanned {
                    containers: planned,
                } => {
                    for p in planned {
                        if p.role == crate::spec::Role::Init {
                            pod.init_containers.push(p.name.clone());
                        }
                        if !containers.contains_key(&p.name) {
                            order.push(p.name.clone());
                        }
                        let c = containers.entry(p.name.clone()).or_default();
                        c.name = p.name;
                        c.image = Some(p.image);
                    }
                }
                Event::PodStarted { network, ip, .. } => {
                    pod.started = Some(e.time);
                    pod.ip = ip;
                    pod.network = Some(network);
                    pod.phase = PodPhase::Running;
                }
                Event::PodStopping { .. } => pod.phase = PodPhase::Stopping,
                // A removed sidecar is gone from the pod (its log stays, for `wpod logs`).
                Event::PodChanged { removed, .. } => {
                    for name in removed {
                        containers.remove(&name);
                        order.retain(|n| *n != name);
                    }
                }
                Event::PodFinished { exit_code } => {
                    pod.phase = PodPhase::Finished;
                    pod.exit_code = Some(exit_code.into());
                    // A container waiting out its back-off when the pod ended will not run
                    // again: it is shown as it last ended, not as CrashLoopBackOff.
                    for c in containers.values_mut() {
                        if c.state == ContainerState::Waiting && c.exit_code.is_some() {
                            c.state = ContainerState::Exited;
                            c.reason = c.last_exit_reason.clone();
                        }
                    }
                }
                _ => {}
            }
            continue;
        };
        let c = containers.entry(container.clone()).or_insert_with(|| {
            order.push(container.clone());
            ContainerView {
                name: container,
                state: ContainerState::Waiting,
                ..Default::default()
            }
        });
        match e.event {
            Event::Pulled { image, .. }
            | Event::AlreadyPresent { image }
            | Event::Pulling { image, .. } => c.image = Some(image),
            Event::Started {
                pid,
                restarts,
                image,
            } => {
                c.state = ContainerState::Running;
                c.pid = pid;
                c.restarts = restarts;
                if image.is_some() {
                    c.image = image;
                }
                c.exit_code = None;
                c.reason = None;
                c.message = None;
            }
            // Waiting for its image, as the kubelet reports it.
            Event::ErrImagePull { message, .. } => {
                c.state = ContainerState::Waiting;
                c.reason = Some("ErrImagePull".into());
                c.message = Some(message);
            }
            Event::ImagePullBackOff { .. } => {
                c.state = ContainerState::Waiting;
                c.reason = Some("ImagePullBackOff".into());
            }
            Event::Ready => c.ready = true,
            Event::NotReady => c.ready = false,
            Event::Exited(x) => {
                c.state = ContainerState::Exited;
                c.ready = false;
                c.pid = None;
                c.exit_code = Some(x.code.into());
                c.reason = Some(x.reason.to_string());
                c.last_exit_reason = c.reason.clone();
                c.message = x.message.clone();
            }
            // Waiting out its restart back-off (kubectl's CrashLoopBackOff).
            Event::BackOff { .. } => {
                c.state = ContainerState::Waiting;
                c.reason = Some("CrashLoopBackOff".into());
            }
            _ => {}
        }
    }
    // Why a container that never ran waits: its image (said above), the init containers
    // before it, or its creation.
    let initialized = pod.init_containers.iter().all(|n| {
        containers
            .get(n)
            .is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == Some(0))
    });
    for c in containers.values_mut() {
        if c.state == ContainerState::Waiting && c.reason.is_none() && c.exit_code.is_none() {
            c.reason = Some(
                if initialized {
                    WAIT_CREATING
                } else {
                    WAIT_INITIALIZING
                }
                .into(),
            );
        }
    }
    pod.containers = order
        .into_iter()
        .filter_map(|n| containers.remove(&n))
        .collect();
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::super::api::PlannedContainer;
    use super::super::events::{Events, JOURNAL};
    use super::*;
    use crate::logs::OutputFormat;
    use crate::spec::Role;
    use crate::status::ExitInfo;

    /// `wpod ps` lists every planned container from the start, with kubectl's reasons for
    /// those that wait: behind an init container, in their restart back-off, or being created.
    #[test]
    fn every_planned_container_is_listed_with_why_it_waits() {
        // A directory of its own: other tests of this process write journals at once.
        let dir = std::env::temp_dir().join(format!("wpod-journal-planned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(JOURNAL);
        let events = Events::new("p", OutputFormat::Silent);
        events.journal_to(&path).unwrap();
        let planned = |name: &str, role| PlannedContainer {
            name: name.into(),
            role,
            image: format!("{name}.wasm"),
        };
        events.emit(
            None,
            Event::PodPlanned {
                containers: vec![
                    planned("setup", Role::Init),
                    planned("tail", Role::NativeSidecar),
                    planned("web", Role::Regular),
                ],
            },
        );
        let started = |n: &str| {
            events.emit(
                Some(n),
                Event::Started {
                    pid: Some(1),
                    restarts: 0,
                    image: None,
                },
            )
        };
        started("setup");
        let state = |v: &PodView, n: &str| {
            let c = v.containers.iter().find(|c| c.name == n).unwrap();
            (c.state, c.reason.clone(), c.image.clone())
        };
        let v = read("p", &path).unwrap();
        assert_eq!(
            v.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["setup", "tail", "web"]
        );
        assert_eq!(state(&v, "setup").0, ContainerState::Running);
        assert_eq!(
            state(&v, "web"),
            (
                ContainerState::Waiting,
                Some("PodInitializing".into()),
                Some("web.wasm".into())
            )
        );
        events.emit(Some("setup"), Event::Exited(ExitInfo::exited(0)));
        started("tail");
        events.emit(Some("tail"), Event::Exited(ExitInfo::exited(1)));
        events.emit(
            Some("tail"),
            Event::BackOff {
                restart_in_ms: 10_000,
                restarts: 1,
            },
        );
        let v = read("p", &path).unwrap();
        assert_eq!(state(&v, "setup").1.as_deref(), Some("Completed"));
        assert_eq!(state(&v, "tail").1.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(state(&v, "web").1.as_deref(), Some("ContainerCreating"));
        // The pod ends while tail waits to restart: it is shown as it last ended.
        events.emit(None, Event::PodFinished { exit_code: 0 });
        let v = read("p", &path).unwrap();
        assert_eq!(
            (state(&v, "tail").0, state(&v, "tail").1.as_deref()),
            (ContainerState::Exited, Some("Error"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
