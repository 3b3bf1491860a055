//! Reading a pod's event journal (`events.jsonl`, written by [`super::events::Events`]): the
//! pod's and each container's current state, folded from the events alone, for `wpod ps`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// A container as its events tell it.
#[derive(Clone, Debug, Default, Serialize)]
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
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    /// RFC 3339 time of its `podStarted` event.
    pub started: Option<String>,
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
        let event = v["event"].as_str().unwrap_or_default();
        let Some(container) = v["container"].as_str() else {
            match event {
                "podStarted" => {
                    pod.started = v["time"].as_str().map(str::to_string);
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
