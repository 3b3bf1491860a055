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
    /// Parses `image` by the distribution reference grammar, normalised as Docker does. Written
    /// out rather than through `oci_client::Reference`'s parser, whose regex costs ~90 ms to
    /// compile in every wpod process that names an image (the tests check both agree).
    pub fn parse(image: &str) -> Result<Self, BadReference> {
        parse(image).map_err(|reason| BadReference {
            image: image.to_string(),
            reason: reason.to_string(),
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

const DOCKER_HUB: &str = "docker.io";

fn parse(s: &str) -> Result<ImageName, &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' that no '/' follows (`host:5000/app` has none).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t)?;
    }
    // The first component is a registry when it looks like a host, as Docker decides.
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            check_registry(first)?;
            (first, path)
        }
        _ => (DOCKER_HUB, name),
    };
    for component in path.split('/') {
        check_component(component)?;
    }
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters");
    }
    Ok(ImageName {
        registry: registry.to_string(),
        repository,
        tag: match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        },
        digest: digest.map(str::to_string),
    })
}

/// `algorithm:hex`, with the lengths the OCI spec gives sha256, sha384 and sha512.
fn check_digest(d: &str) -> Result<(), &'static str> {
    let (algorithm, hex) = d.split_once(':').ok_or("the digest is not algorithm:hex")?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("the digest's algorithm is not sha256, sha384 or sha512"),
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the digest's hex part has the wrong length or characters");
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn check_tag(t: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match t.as_bytes() {
        [first, rest @ ..]
            if word(*first)
                && rest.len() < 128
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-') =>
        {
            Ok(())
        }
        _ => Err("a tag holds only letters, digits, '_', '.' and '-', at most 128 of them, and does not start with '.' or '-'"),
    }
}

/// Host labels (`[A-Za-z0-9]`, inner `-`) separated by '.', then an optional `:port`.
fn check_registry(r: &str) -> Result<(), &'static str> {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the registry's port is not a number");
        }
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("the registry is not a host name")
    }
}

/// `[a-z0-9]+` runs joined by '.', '_', '__' or dashes.
fn check_component(c: &str) -> Result<(), &'static str> {
    const BAD: &str = "a repository path component is not lowercase letters and digits joined by '.', '_', '__' or '-'";
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(BAD);
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &c[start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|x| x == b'-') => {}
            _ => return Err(BAD),
        }
    }
    Ok(())
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

    #[test]
    fn the_parser_agrees_with_the_distribution_grammar() {
        let digest = format!("sha256:{}", "c".repeat(64));
        let inputs = [
            "nginx".to_string(),
            "nginx:1.25".into(),
            "library/nginx".into(),
            "docker.io/nginx".into(),
            "index.docker.io/nginx:1".into(),
            "team/app".into(),
            "team/sub/app:v2".into(),
            "localhost/app".into(),
            "localhost:5000/app".into(),
            "localhost:5000".into(),
            "127.0.0.1:5000/team/app:v2".into(),
            "reg.example.com/a.b/c_d/e__f/g-h/i--j:latest".into(),
            format!("nginx@{digest}"),
            format!("nginx:1.25@{digest}"),
            format!("reg:5000/x@{digest}"),
            "nginx@sha256:abc".into(),
            "nginx@md5:0123456789abcdef0123456789abcdef".into(),
            "Nginx".into(),
            "nginx:".into(),
            ":tag".into(),
            "nginx:.tag".into(),
            format!("nginx:{}", "t".repeat(128)),
            format!("nginx:{}", "t".repeat(129)),
            "a..b".into(),
            "a___b".into(),
            "a_-b".into(),
            "-a".into(),
            "a-".into(),
            "reg.example.com/".into(),
            "reg.example.com//x".into(),
            "-reg.com/x".into(),
            "reg.com:port/x".into(),
            "reg.com:/x".into(),
            "a/b/".into(),
            "Not Valid!".into(),
            "".into(),
        ];
        for input in inputs {
            let ours = parse(&input).ok();
            let theirs = oci_client::Reference::try_from(input.as_str()).ok();
            match (&ours, &theirs) {
                (Some(o), Some(t)) => {
                    assert_eq!(o.registry, t.registry(), "{input}");
                    assert_eq!(o.repository, t.repository(), "{input}");
                    assert_eq!(o.tag.as_deref(), t.tag(), "{input}");
                    assert_eq!(o.digest.as_deref(), t.digest(), "{input}");
                }
                (None, None) => {}
                _ => panic!("{input:?}: wpod says {ours:?}, the grammar says {theirs:?}"),
            }
        }
    }
}
