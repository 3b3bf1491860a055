//! Reading a pod's event journal (`events.jsonl`, written by [`super::events::Events`]): the
//! pod's and each container's current state, folded from the events alone, for `wpod ps`.
//!
//! The journal is bounded: past [`MAX_JOURNAL_BYTES`] the writer moves it to `events.jsonl.1`
//! (the one before is dropped) and starts the new file with a `snapshot` record, the state
//! folded so far, from which reading starts. A crash loop once grew it by 7.8 MB in ten minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The size past which the journal is rotated.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 20;

/// The rotated journal beside `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

/// The journal's events, oldest first: the rotated file's, then the current one's (snapshot
/// records left out).
pub fn lines(path: &Path) -> Vec<String> {
    [rotated(path), path.to_path_buf()]
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !is_snapshot(l))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a journal line is a snapshot record rather than an event.
pub fn is_snapshot(line: &str) -> bool {
    line.starts_with("{\"type\":\"snapshot\"")
}

/// A container as its events tell it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    /// waiting, running, exited
    pub state: String,
    pub ready: bool,
    pub restarts: u32,
    pub pid: Option<i32>,
    pub exit_code: Option<i64>,
    pub image: Option<String>,
}

/// A pod as its events tell it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    /// RFC 3339 time of its `podStarted` event.
    pub started: Option<String>,
    /// Its address on its network, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `cni`, `loopback` or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Starting, Running, Stopping, Finished
    pub phase: String,
    pub exit_code: Option<i64>,
    pub containers: Vec<ContainerView>,
}

/// The view of the pod `name` from the journal at `path` (lines it cannot read are skipped).
pub fn read(name: &str, path: &Path) -> PodView {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut pod = PodView {
        name: name.to_string(),
        phase: "Starting".into(),
        ..Default::default()
    };
    let mut containers: BTreeMap<String, ContainerView> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["type"] == "snapshot" {
            if let Ok(view) = serde_json::from_value::<PodView>(v["view"].clone()) {
                containers.clear();
                order = view.containers.iter().map(|c| c.name.clone()).collect();
                containers.extend(view.containers.into_iter().map(|c| (c.name.clone(), c)));
                pod = PodView {
                    containers: Vec::new(),
                    ..view
                };
            }
            continue;
        }
        let event = v["event"].as_str().unwrap_or_default();
        let Some(container) = v["container"].as_str() else {
            match event {
                "podStarted" => {
                    pod.started = v["time"].as_str().map(str::to_string);
                    pod.ip = v["ip"].as_str().map(str::to_string);
                    pod.network = v["network"].as_str().map(str::to_string);
                    pod.phase = "Running".into();
                }
                "podStopping" => pod.phase = "Stopping".into(),
                // A removed sidecar is gone from the pod (its log stays, for `wpod logs`).
                "podChanged" => {
                    for name in v["removed"].as_array().into_iter().flatten() {
                        if let Some(name) = name.as_str() {
                            containers.remove(name);
                            order.retain(|n| n != name);
                        }
                    }
                }
                "podFinished" => {
                    pod.phase = "Finished".into();
                    pod.exit_code = v["exitCode"].as_i64();
                }
                _ => {}
            }
            continue;
        };
        let c = containers.entry(container.to_string()).or_insert_with(|| {
            order.push(container.to_string());
            ContainerView {
                name: container.to_string(),
                state: "waiting".into(),
                ..Default::default()
            }
        });
        match event {
            "pulled" | "alreadyPresent" | "pulling" => {
                c.image = v["image"].as_str().map(str::to_string);
            }
            "started" => {
                c.state = "running".into();
                c.pid = v["pid"].as_i64().map(|p| p as i32);
                c.restarts = v["restarts"].as_u64().unwrap_or(0) as u32;
                c.exit_code = None;
            }
            "ready" => c.ready = true,
            "notReady" => c.ready = false,
            "exited" => {
                c.state = "exited".into();
                c.ready = false;
                c.pid = None;
                c.exit_code = v["code"].as_i64().or_else(|| v["exitCode"].as_i64());
            }
            "backOff" => c.state = "waiting".into(),
            _ => {}
        }
    }
    pod.containers = order
        .into_iter()
        .filter_map(|n| containers.remove(&n))
        .collect();
    pod
}
