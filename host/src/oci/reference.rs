//! Image names, normalised as Docker and Kubernetes do: `nginx` is
//! `docker.io/library/nginx:latest`, `host:5000/team/app` keeps its registry, a digest pins
//! the content.

use crate::spec::PullPolicy;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    /// `docker.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/nginx`
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("\"{image}\" is not an image reference ({reason}); write one such as nginx, nginx:1.25 or registry.example:5000/team/app@sha256:<digest>")]
pub struct BadReference {
    pub image: String,
    pub reason: String,
}

impl ImageName {
    pub fn parse(image: &str) -> Result<Self, BadReference> {
        let r: oci_client::Reference =
            image
                .parse()
                .map_err(|e: oci_client::ParseError| BadReference {
                    image: image.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(ImageName {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// `docker.io/library/nginx`: what registries.conf prefixes match.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `docker.io/library/nginx:latest` or `...@sha256:...`: the name the store keeps.
    pub fn canonical(&self) -> String {
        let mut s = self.repository_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// Kubernetes' default `imagePullPolicy`: `Always` for `:latest` (or no tag), otherwise
    /// `IfNotPresent` (a digest included).
    pub fn default_pull_policy(&self) -> PullPolicy {
        match (&self.digest, self.tag.as_deref()) {
            (Some(_), _) => PullPolicy::IfNotPresent,
            (None, None | Some("latest")) => PullPolicy::Always,
            (None, Some(_)) => PullPolicy::IfNotPresent,
        }
    }

    /// The same image at another registry location (`127.0.0.1:5000/library/nginx`).
    pub fn at(&self, location: &str) -> oci_client::Reference {
        let (registry, repository) = location.split_once('/').unwrap_or((location, ""));
        let repository = repository.to_string();
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
                registry.to_string(),
                repository,
                t.clone(),
                d.clone(),
            ),
            (_, Some(d)) => {
                oci_client::Reference::with_digest(registry.to_string(), repository, d.clone())
            }
            (Some(t), None) => {
                oci_client::Reference::with_tag(registry.to_string(), repository, t.clone())
            }
            (None, None) => {
                oci_client::Reference::with_tag(registry.to_string(), repository, "latest".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_docker_does() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("team/app", "docker.io/team/app:latest"),
            ("127.0.0.1:5000/team/app:v2", "127.0.0.1:5000/team/app:v2"),
            ("localhost/app", "localhost/app:latest"),
        ];
        for (image, canonical) in cases {
            assert_eq!(
                ImageName::parse(image).unwrap().canonical(),
                canonical,
                "{image}"
            );
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = ImageName::parse(&format!("nginx@{digest}")).unwrap();
        assert_eq!(
            pinned.canonical(),
            format!("docker.io/library/nginx@{digest}")
        );
        assert!(ImageName::parse("Not Valid!").is_err());
    }

    #[test]
    fn default_pull_policy_is_kubernetes() {
        let p = |i: &str| ImageName::parse(i).unwrap().default_pull_policy();
        assert_eq!(p("nginx"), PullPolicy::Always);
        assert_eq!(p("nginx:latest"), PullPolicy::Always);
        assert_eq!(p("nginx:1.25"), PullPolicy::IfNotPresent);
        assert_eq!(
            p(&format!("nginx@sha256:{}", "b".repeat(64))),
            PullPolicy::IfNotPresent
        );
    }

    #[test]
    fn a_mirror_location_keeps_the_tag() {
        let n = ImageName::parse("nginx:1.25").unwrap();
        let r = n.at("127.0.0.1:5000/library/nginx");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "library/nginx");
        assert_eq!(r.tag(), Some("1.25"));
    }
}
