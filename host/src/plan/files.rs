//! The files of `configMap`, `secret`, `downwardAPI` and `projected` volumes, decided from the
//! pod's objects and fields as the kubelet decides them: every key of a ConfigMap or Secret by
//! its name, or only `items` at their paths; the downward API's values; each with its mode. The
//! sandbox writes them (atomically, the kubelet's `..data` layout), and writes them again when
//! `wpod apply` brings new ConfigMaps or Secrets.

use std::collections::BTreeMap;

use crate::spec::env::{self, HostFacts};
use crate::spec::{Pod, Projected, Projection};

/// What one projected volume holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Files {
    /// By relative path.
    pub files: BTreeMap<String, File>,
    /// Some file comes from a Secret: the volume lives in memory (a tmpfs), never on disk.
    pub secret: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// Markers of values the sandbox knows (the pod's UID) are filled in as it writes them
    /// ([`crate::spec::env::RuntimeFacts::fill`]).
    pub data: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for Files {
    /// Paths and sizes only: a Secret's values never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: BTreeMap<&String, String> = self
            .files
            .iter()
            .map(|(p, file)| {
                (
                    p,
                    format!("{} bytes, mode {:o}", file.data.len(), file.mode),
                )
            })
            .collect();
        f.debug_struct("Files")
            .field("files", &files)
            .field("secret", &self.secret)
            .finish()
    }
}

/// A problem at `field` (below the volume's path), for a located diagnostic.
pub type Problem = (String, String);

/// The files of `volume` (at `spec.volumes[i]`, written as `projected.written_as`).
pub fn project(
    pod: &Pod,
    projected: &Projected,
    host: &HostFacts<'_>,
) -> Result<Files, Vec<Problem>> {
    let mut out = Files {
        files: BTreeMap::new(),
        secret: false,
    };
    let mut problems = Vec::new();
    let default_mode = projected.default_mode;
    let add = |out: &mut Files,
               problems: &mut Vec<Problem>,
               field: String,
               path: &str,
               data: Vec<u8>,
               mode: Option<u32>| {
        let file = File {
            data,
            mode: mode.unwrap_or(default_mode),
        };
        // A path that is another's directory, or the same path twice, cannot both be written.
        let clash = out.files.keys().find(|p| {
            *p == path || path.starts_with(&format!("{p}/")) || p.starts_with(&format!("{path}/"))
        });
        match clash {
            Some(other) => problems.push((
                field,
                format!(
                    "\"{path}\" clashes with \"{other}\", written by another item of this volume"
                ),
            )),
            None => {
                out.files.insert(path.to_string(), file);
            }
        }
    };
    for (i, source) in projected.sources.iter().enumerate() {
        // Where this source was written: `configMap`, or `projected.sources[i].configMap`.
        let at = |what: &str| match projected.written_as {
            "projected" => format!("projected.sources[{i}].{what}"),
            // A `configMap`, `secret` or `downwardAPI` volume is its one source.
            _ => what.to_string(),
        };
        match source {
            Projection::ConfigMap(r) | Projection::Secret(r) => {
                let secret = matches!(source, Projection::Secret(_));
                let (kind, key) = if secret {
                    ("Secret", "secret")
                } else {
                    ("ConfigMap", "configMap")
                };
                let name_field = match (secret, projected.written_as) {
                    (true, "secret") => "secret.secretName".to_string(),
                    _ => format!("{key}.name"),
                };
                let data = if secret {
                    pod.objects.secrets.get(&r.name).map(|s| &s.data)
                } else {
                    pod.objects.config_maps.get(&r.name).map(|c| &c.data)
                };
                out.secret |= secret;
                let Some(data) = data else {
                    if !r.optional {
                        problems.push((
                            at(&name_field),
                            format!(
                                "no {kind} named \"{}\" in this file; add a `kind: {kind}` document \
                                 with metadata.name: {}, or set optional: true",
                                r.name, r.name
                            ),
                        ));
                    }
                    continue;
                };
                if r.items.is_empty() {
                    for (k, v) in data {
                        add(
                            &mut out,
                            &mut problems,
                            at(&format!("{key}.name")),
                            k,
                            v.clone(),
                            None,
                        );
                    }
                }
                for (j, item) in r.items.iter().enumerate() {
                    match data.get(&item.key) {
                        Some(v) => add(
                            &mut out,
                            &mut problems,
                            at(&format!("{key}.items[{j}].path")),
                            &item.path,
                            v.clone(),
                            item.mode,
                        ),
                        None if r.optional => {}
                        None => problems.push((
                            at(&format!("{key}.items[{j}].key")),
                            format!(
                                "{kind} {} has no key \"{}\" (it has {})",
                                r.name,
                                item.key,
                                data.keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )),
                    }
                }
            }
            Projection::DownwardApi(items) => {
                for (j, item) in items.iter().enumerate() {
                    let field = at(&format!("downwardAPI.items[{j}]"));
                    let own = pod.spec.containers.first();
                    let value = match (&item.field, &item.resource, own) {
                        (Some(f), _, _) => env::field_value(pod, host, f),
                        (None, Some(r), Some(own)) => env::resource_value(pod, own, host, r),
                        _ => Err("give fieldRef or resourceFieldRef".into()),
                    };
                    match value {
                        Ok(v) => add(
                            &mut out,
                            &mut problems,
                            format!("{field}.path"),
                            &item.path,
                            v.into_bytes(),
                            item.mode,
                        ),
                        Err(m) => problems.push((field, m)),
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::VolumeSource;
    use std::path::Path;

    const HOST: HostFacts<'static> = HostFacts {
        node_name: "node-1",
        cpu_millis: 2000,
        memory_bytes: 8 << 30,
    };

    fn volumes(yaml: &str) -> (Pod, Vec<Projected>) {
        let pod = crate::spec::parse(Path::new("pod.yaml"), yaml)
            .expect("a valid manifest")
            .remove(0);
        let projected = pod
            .spec
            .volumes
            .iter()
            .filter_map(|v| match &v.source {
                VolumeSource::Projected(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        (pod, projected)
    }

    #[test]
    fn keys_items_modes_and_the_downward_api_become_files() {
        let (pod, v) = volumes(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: shop, tier: front}}
spec:
  containers:
  - name: main
    command: [x]
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: all, mountPath: /all}
  volumes:
  - name: all
    configMap: {name: settings}
  - name: some
    secret:
      secretName: creds
      defaultMode: 0400
      items: [{key: password, path: db/password}]
  - name: mixed
    projected:
      sources:
      - configMap: {name: settings, items: [{key: level, path: level, mode: 0600}]}
      - downwardAPI:
          items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: debug, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cr3t, user: admin}
"#,
        );
        let all = project(&pod, &v[0], &HOST).unwrap();
        assert_eq!(all.files.keys().collect::<Vec<_>>(), ["level", "mode"]);
        assert_eq!(all.files["level"].mode, 0o644);
        assert!(!all.secret);
        let some = project(&pod, &v[1], &HOST).unwrap();
        assert_eq!(some.files.keys().collect::<Vec<_>>(), ["db/password"]);
        assert_eq!(some.files["db/password"].mode, 0o400);
        assert_eq!(some.files["db/password"].data, b"s3cr3t");
        assert!(some.secret);
        // Never in a log.
        assert!(!format!("{some:?}").contains("s3cr3t"));
        let mixed = project(&pod, &v[2], &HOST).unwrap();
        assert_eq!(mixed.files["level"].mode, 0o600);
        assert_eq!(mixed.files["labels"].data, b"app=\"shop\"\ntier=\"front\"");
        assert_eq!(mixed.files["mem"].data, b"64");
    }

    #[test]
    fn missing_objects_keys_and_clashes_are_located() {
        let (pod, v) = volumes(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: main, command: [x]}
  volumes:
  - name: gone
    configMap: {name: nothere}
  - name: optional
    secret: {secretName: nothere, optional: true}
  - name: clash
    projected:
      sources:
      - configMap: {name: settings, items: [{key: level, path: conf}, {key: nokey, path: x}]}
      - configMap: {name: settings, items: [{key: mode, path: conf/mode}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: debug, mode: fast}
"#,
        );
        let err = project(&pod, &v[0], &HOST).unwrap_err();
        assert_eq!(err[0].0, "configMap.name");
        assert!(
            err[0].1.contains("no ConfigMap named \"nothere\""),
            "{err:?}"
        );
        assert!(project(&pod, &v[1], &HOST).unwrap().files.is_empty());
        let err = project(&pod, &v[2], &HOST).unwrap_err();
        assert_eq!(
            err,
            [
                (
                    "projected.sources[0].configMap.items[1].key".to_string(),
                    "ConfigMap settings has no key \"nokey\" (it has level, mode)".to_string()
                ),
                (
                    "projected.sources[1].configMap.items[0].path".to_string(),
                    "\"conf/mode\" clashes with \"conf\", written by another item of this volume"
                        .to_string()
                ),
            ]
        );
    }
}
