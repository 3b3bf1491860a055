//! Where images come from: `/etc/wpod/registries.conf` (or `$WPOD_REGISTRIES_CONF`), in the
//! containers-registries.conf(5) v2 TOML form podman and skopeo read:
//!
//! ```toml
//! [[registry]]
//! prefix = "docker.io"            # which image names this entry covers (default: location)
//! location = "registry.example:5000"  # where they are pulled from
//! insecure = false                # plain HTTP (and no TLS verification)
//!
//! [[registry.mirror]]             # tried first, in order; then the location
//! location = "127.0.0.1:5000"
//! insecure = true
//! ```
//!
//! The entry with the longest `prefix` that matches an image name (at a `/` or `:` boundary)
//! applies; the matched prefix is replaced by each source's location. An image no entry covers is
//! pulled from its own registry over HTTPS. This is how an air-gapped host points `docker.io` at
//! its own registry, and how the tests point it at one on loopback.
//!
//! Prefixes and locations are compared as written, so their registries must be spelled as image
//! names are (`127.0.0.1:5000`, not `127.1:5000`; see oci/reference.rs), and a URI scheme is
//! refused as containers/image refuses it (`insecure = true` is what says plain HTTP).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default place of the configuration.
pub const DEFAULT_PATH: &str = "/etc/wpod/registries.conf";

#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The message includes the OS error.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The message includes the parser's, with its line and column.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: [[registry]] entry {index} has neither prefix nor location; give at least one", path.display())]
    Empty { path: PathBuf, index: usize },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
    /// Where `wpod search TERM` (no registry named) looks, as `podman search` does. Pulls never
    /// use them: `nginx` means `docker.io/library/nginx`, as in Kubernetes.
    #[serde(default, rename = "unqualified-search-registries")]
    unqualified_search_registries: Vec<String>,
    #[serde(default, rename = "short-name-mode")]
    _short_name_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
}

/// One place to pull an image from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The image's name at this source: `127.0.0.1:5000/library/nginx`.
    pub name: String,
    /// Plain HTTP, no TLS verification.
    pub insecure: bool,
    /// A mirror (a failure falls through to the next source).
    pub mirror: bool,
}

impl Source {
    /// The registry host (and port) this source is at.
    pub fn host(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }
}

/// The registries configuration, read once per command.
#[derive(Debug, Default)]
pub struct Registries {
    entries: Vec<Rule>,
    /// `unqualified-search-registries`, for `wpod search` without a registry.
    pub search: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<(String, bool)>,
}

/// Why an image cannot be pulled at all.
#[derive(Debug, thiserror::Error)]
#[error("registry {prefix} is blocked in the registries configuration")]
pub struct Blocked {
    pub prefix: String,
}

impl Registries {
    /// The configuration at `$WPOD_REGISTRIES_CONF`, else `/etc/wpod/registries.conf`; no file
    /// there means no rules.
    pub fn load() -> Result<Self, RegistriesError> {
        match crate::files::read_config("WPOD_REGISTRIES_CONF", DEFAULT_PATH) {
            Ok(Some((path, text))) => Self::parse(&path, &text),
            Ok(None) => Ok(Self::default()),
            Err((path, error)) => Err(RegistriesError::Read { path, error }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, RegistriesError> {
        let file: File = toml::from_str(text).map_err(|e| RegistriesError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let place = |at: String, field: &str, value: &str| {
            parse_place(value).map_err(|why| RegistriesError::Parse {
                path: path.to_path_buf(),
                message: format!("{at}: {field} \"{value}\": {why}"),
            })
        };
        let mut entries = Vec::new();
        for (index, e) in file.registry.into_iter().enumerate() {
            let at = format!("[[registry]] entry {index}");
            let prefix = e
                .prefix
                .map(|p| place(at.clone(), "prefix", &p))
                .transpose()?;
            let location = e
                .location
                .map(|l| place(at.clone(), "location", &l))
                .transpose()?;
            let (prefix, location) = match (prefix, location) {
                (Some(p), Some(l)) => (p, l),
                (Some(p), None) => (p.clone(), p),
                (None, Some(l)) => (l.clone(), l),
                (None, None) => {
                    return Err(RegistriesError::Empty {
                        path: path.to_path_buf(),
                        index,
                    })
                }
            };
            let mut mirrors = Vec::new();
            for (m, mirror) in e.mirror.into_iter().enumerate() {
                let location = place(
                    format!("{at}, [[registry.mirror]] {m}"),
                    "location",
                    &mirror.location,
                )?;
                mirrors.push((location, mirror.insecure));
            }
            entries.push(Rule {
                prefix,
                location,
                insecure: e.insecure,
                blocked: e.blocked,
                mirrors,
            });
        }
        Ok(Registries {
            entries,
            search: file.unqualified_search_registries,
        })
    }

    /// Where to pull `name` (a fully qualified image name without tag or digest, such as
    /// `docker.io/library/nginx`) from, in order: the mirrors, then the location.
    pub fn sources(&self, name: &str) -> Result<Vec<Source>, Blocked> {
        let rule = self
            .entries
            .iter()
            .filter(|r| covers(&r.prefix, name))
            .max_by_key(|r| r.prefix.len());
        let Some(rule) = rule else {
            return Ok(vec![Source {
                name: name.to_string(),
                insecure: false,
                mirror: false,
            }]);
        };
        if rule.blocked {
            return Err(Blocked {
                prefix: rule.prefix.clone(),
            });
        }
        let rest = &name[rule.prefix.len()..];
        let mut out: Vec<Source> = rule
            .mirrors
            .iter()
            .map(|(location, insecure)| Source {
                name: format!("{location}{rest}"),
                insecure: *insecure,
                mirror: true,
            })
            .collect();
        out.push(Source {
            name: format!("{}{rest}", rule.location),
            insecure: rule.insecure,
            mirror: false,
        });
        Ok(out)
    }
}

/// Whether `prefix` covers `name`: equal, or followed by `/` or `:` in it.
fn covers(prefix: &str, name: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with(':'),
        None => false,
    }
}

/// Why a prefix or location is refused.
#[derive(Debug, thiserror::Error)]
enum PlaceError {
    #[error("URI schemes are not supported; write \"{0}\" (with insecure = true for plain HTTP)")]
    Scheme(String),
    #[error(transparent)]
    Registry(#[from] super::reference::RegistryNameError),
}

/// A prefix or location, trailing `/` trimmed as containers/image trims it. A scheme is refused
/// as containers/image refuses it ("URI schemes are not supported"): stripping it would make
/// `http://` mean nothing while the user thinks it means plain HTTP. The registry part must be
/// spelled as in image names, else the literal comparisons with image names (`covers`, the
/// policy's scopes) miss it. A `*.domain` wildcard prefix checks its domain.
fn parse_place(value: &str) -> Result<String, PlaceError> {
    let trimmed = value.trim_end_matches('/');
    if let Some(rest) = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
    {
        return Err(PlaceError::Scheme(rest.to_string()));
    }
    let registry = trimmed.split('/').next().unwrap_or(trimmed);
    let registry = registry.strip_prefix("*.").unwrap_or(registry);
    super::reference::check_registry_name(registry)?;
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "registry-1.docker.io"

[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true

[[registry.mirror]]
location = "mirror.example/hub"

[[registry]]
prefix = "docker.io/library/busybox"
location = "127.0.0.1:5001/bb"
insecure = true

[[registry]]
location = "quay.io"
blocked = true
"#;

    fn conf() -> Registries {
        Registries::parse(Path::new("registries.conf"), CONF).unwrap()
    }

    #[test]
    fn mirrors_come_first_then_the_location() {
        let names: Vec<(String, bool, bool)> = conf()
            .sources("docker.io/library/nginx")
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.insecure, s.mirror))
            .collect();
        assert_eq!(
            names,
            [
                ("127.0.0.1:5000/library/nginx".to_string(), true, true),
                ("mirror.example/hub/library/nginx".to_string(), false, true),
                (
                    "registry-1.docker.io/library/nginx".to_string(),
                    false,
                    false
                ),
            ]
        );
    }

    #[test]
    fn the_longest_prefix_wins_at_a_boundary() {
        let s = conf().sources("docker.io/library/busybox").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "127.0.0.1:5001/bb");
        // `busyboxes` is not under `busybox`.
        let s = conf().sources("docker.io/library/busyboxes").unwrap();
        assert_eq!(s[0].name, "127.0.0.1:5000/library/busyboxes");
    }

    #[test]
    fn unconfigured_registries_are_used_as_named() {
        let s = conf().sources("ghcr.io/org/app").unwrap();
        assert_eq!(
            s,
            [Source {
                name: "ghcr.io/org/app".to_string(),
                insecure: false,
                mirror: false
            }]
        );
    }

    #[test]
    fn blocked_registries_are_refused() {
        assert!(conf().sources("quay.io/org/app").is_err());
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let e = Registries::parse(
            Path::new("/etc/wpod/registries.conf"),
            "[[registry]]\nlocaton = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/etc/wpod/registries.conf: "), "{e}");
        assert!(e.contains("locaton"), "{e}");
        let e = Registries::parse(Path::new("r.conf"), "[[registry]]\ninsecure = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither prefix nor location"), "{e}");
    }

    #[test]
    fn schemes_and_other_spellings_of_a_registry_are_refused() {
        let parse = |toml: &str| {
            Registries::parse(Path::new("/etc/wpod/registries.conf"), toml)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = parse("[[registry]]\nlocation = \"http://reg:5000\"\n").unwrap_err();
        assert!(
            e.contains("entry 0: location \"http://reg:5000\"")
                && e.contains("URI schemes are not supported")
                && e.contains("write \"reg:5000\""),
            "{e}"
        );
        let e = parse("[[registry]]\nprefix = \"https://docker.io\"\nlocation = \"reg.example\"\n")
            .unwrap_err();
        assert!(e.contains("prefix") && e.contains("URI schemes"), "{e}");
        let e = parse(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"reg.example\"\n\
             [[registry.mirror]]\nlocation = \"127.1:5000/hub\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "/etc/wpod/registries.conf: [[registry]] entry 0, [[registry.mirror]] 0: location"
            ) && e.contains("\"127.0.0.1:5000\""),
            "{e}"
        );
        for (prefix, canonical) in [
            ("LOCALHOST:5000", "localhost:5000"),
            ("quay.io:443", "quay.io"),
            ("localhost:05000/x", "localhost:5000"),
            ("0x7f.1:5000", "127.0.0.1:5000"),
        ] {
            let e = parse(&format!(
                "[[registry]]\nprefix = \"{prefix}\"\nblocked = true\n"
            ))
            .unwrap_err();
            assert!(e.contains(&format!("\"{canonical}\"")), "{prefix}: {e}");
        }
        let e = parse("[[registry]]\nlocation = \"*.Example.com\"\n").unwrap_err();
        assert!(e.contains("\"example.com\""), "{e}");
        // The canonical spellings, a trailing slash and a wildcard prefix are fine.
        parse(
            "[[registry]]\nprefix = \"*.example.com\"\nlocation = \"127.0.0.1:5000/\"\n\
             [[registry]]\nlocation = \"localhost:5000/team\"\nblocked = true\n",
        )
        .unwrap();
    }
}
