//! Image names, normalised as Docker and Kubernetes do: `nginx` is
//! `docker.io/library/nginx:latest`, `host:5000/team/app` keeps its registry, a digest pins
//! the content.
//!
//! A registry is accepted only as the HTTP client spells it (`127.0.0.1:5000`, not `127.1:5000`,
//! `LOCALHOST:5000` or `127.0.0.1:05000`): the trust policy's scopes and registries.conf compare
//! registries as written, as podman does, so two spellings of one server would be two names to
//! them and one to the connection (a `reject` scope or a `blocked` registry passed by writing
//! the address another way).

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

/// A reference as containers/image's `ParseNormalizedNamed` leaves it: Docker Hub names
/// normalised, **no default tag** (a name-only reference stays name-only), a tag and a digest
/// both kept. This is what a signature's `docker-reference` and the trust policy's
/// `signedIdentity` fields are compared as; its `Display` is the reference's `String()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// `docker.io`, `127.0.0.1:5000`: as written (a signature's is not held to the spelling
    /// rule, so that a non-canonical one simply fails the comparison, as in containers/image).
    pub domain: String,
    /// `library/nginx`
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Named {
    /// Parses `reference` by the distribution grammar, normalised, without adding a tag.
    pub fn parse(reference: &str) -> Result<Self, BadReference> {
        parse(reference).map_err(|reason| BadReference {
            image: reference.to_string(),
            reason: reason.to_string(),
        })
    }

    /// `domain/path`: the repository, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Neither tag nor digest: what cosign writes, and what only `matchRepository` and
    /// `exactRepository` accept.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageName {
    /// Parses `image` by the distribution reference grammar, normalised as Docker does, with its
    /// registry spelled as the HTTP client spells it (see the module comment). Written out
    /// rather than through `oci_client::Reference`'s parser, whose regex costs ~90 ms to
    /// compile in every wpod process that names an image (the tests check both agree).
    pub fn parse(image: &str) -> Result<Self, BadReference> {
        let bad = |reason: String| BadReference {
            image: image.to_string(),
            reason,
        };
        let named = parse(image).map_err(|r| bad(r.to_string()))?;
        check_spelling(&named.domain).map_err(|e| bad(e.to_string()))?;
        Ok(ImageName {
            tag: match (&named.tag, &named.digest) {
                (None, None) => Some("latest".to_string()),
                (t, _) => t.clone(),
            },
            registry: named.domain,
            repository: named.path,
            digest: named.digest,
        })
    }

    /// The image's identity for the trust policy's `signedIdentity`: `name@digest` when it is
    /// pinned (a tag beside the digest is dropped, as podman drops it: the digest is what is
    /// pulled), else `name:tag`.
    pub fn identity(&self) -> Named {
        Named {
            domain: self.registry.clone(),
            path: self.repository.clone(),
            tag: if self.digest.is_some() {
                None
            } else {
                self.tag.clone()
            },
            digest: self.digest.clone(),
        }
    }

    /// What `wpod sign` writes as the signature's `docker-reference`: `name:tag`, or
    /// `name@digest` for a digest-only name. A fully specified reference, as skopeo and podman
    /// sign, so the default `matchRepoDigestOrExact` accepts it for exactly this tag (a
    /// repository-only identity, cosign's, would need `matchRepository`).
    pub fn signed_reference(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.repository_name()),
            (None, Some(d)) => format!("{}@{d}", self.repository_name()),
            (None, None) => format!("{}:latest", self.repository_name()),
        }
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

/// containers/image's `ParseNormalizedNamed`: the grammar and Docker's normalisation, no
/// default tag, and no spelling rule (the callers that need it add it).
fn parse(s: &str) -> Result<Named, &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("64 hexadecimal characters are an image ID, not a name");
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
    // containers/image bounds the whole normalised name, registry included.
    if registry.len() + 1 + repository.len() > 255 {
        return Err("the repository name, registry included, is longer than 255 characters");
    }
    Ok(Named {
        domain: registry.to_string(),
        path: repository,
        tag: tag.map(str::to_string),
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

/// Why a registry name is refused; the message says which spelling to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryNameError {
    #[error("\"{registry}\": {reason}")]
    Grammar {
        registry: String,
        reason: &'static str,
    },
    #[error(
        "the registry \"{registry}\" is not a host name or IPv4 address the HTTP client can \
         connect to ({reason}); write a dotted-quad address or a host name whose last label is \
         not a number"
    )]
    NotAHost { registry: String, reason: String },
    #[error(
        "the registry \"{registry}\" is the unspecified address 0.0.0.0; write 127.0.0.1 or \
         the registry's own address"
    )]
    Unspecified { registry: String },
    #[error("the registry \"{registry}\" has port {port}, which is not between 1 and 65535")]
    Port { registry: String, port: String },
    #[error(
        "the registry \"{registry}\" names port {port}, the default port of https (443) or \
         plain HTTP (80), so the HTTP client reaches it as \"{host}\" too; write \"{host}\" (the \
         trust policy and registries.conf compare registries as written)"
    )]
    DefaultPort {
        registry: String,
        port: u16,
        host: String,
    },
    #[error(
        "the registry \"{registry}\" is spelled \"{spelled}\" by the HTTP client; write that \
         (the trust policy and registries.conf compare registries as written)"
    )]
    Spelling { registry: String, spelled: String },
}

/// Checks that `registry` (`host[:port]`) is written by the reference grammar and spelled as
/// wpod's HTTP client spells it; the error says which spelling to write. For registries.conf
/// entries and the trust policy's scopes and identities, which name registries outside an image
/// reference.
pub fn check_registry_name(registry: &str) -> Result<(), RegistryNameError> {
    check_registry(registry).map_err(|reason| RegistryNameError::Grammar {
        registry: registry.to_string(),
        reason,
    })?;
    check_spelling(registry)
}

/// The spelling rule (see the module comment). reqwest hands the URL to the `url` crate
/// (WHATWG), so its host parser decides where a connection goes: it lowercases, reads
/// `127.1`, `2130706433`, `0x7f.1` and `0177.0.0.1` as 127.0.0.1, ignores a port's leading
/// zeros and drops the scheme's default port. A registry is accepted only if that changes
/// nothing; it is refused, not rewritten, so that wpod's names stay podman's for the same text.
/// `registry` has passed `check_registry` (no IPv6, which the grammar refuses).
fn check_spelling(registry: &str) -> Result<(), RegistryNameError> {
    let (host, port) = match registry.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let parsed = url::Host::<String>::parse(host).map_err(|e| RegistryNameError::NotAHost {
        registry: registry.to_string(),
        reason: e.to_string(),
    })?;
    if matches!(parsed, url::Host::Ipv4(a) if a.is_unspecified()) {
        return Err(RegistryNameError::Unspecified {
            registry: registry.to_string(),
        });
    }
    let host_spelled = parsed.to_string();
    let port_spelled = match port {
        None => None,
        Some(p) => {
            let digits = p.trim_start_matches('0');
            let number = if digits.len() > 5 {
                None
            } else {
                digits.parse::<u16>().ok().filter(|n| *n != 0)
            };
            let Some(number) = number else {
                return Err(RegistryNameError::Port {
                    registry: registry.to_string(),
                    port: p.to_string(),
                });
            };
            // 443 is https's default, so the client drops it; 80 is http's, and a
            // registries.conf entry covering `reg` makes `reg:80` plain HTTP to the same
            // port: both are the bare host to the client, and another name to the policy.
            if number == 443 || number == 80 {
                return Err(RegistryNameError::DefaultPort {
                    registry: registry.to_string(),
                    port: number,
                    host: host_spelled,
                });
            }
            Some(number.to_string())
        }
    };
    let spelled = match &port_spelled {
        Some(p) => format!("{host_spelled}:{p}"),
        None => host_spelled,
    };
    if spelled != registry {
        return Err(RegistryNameError::Spelling {
            registry: registry.to_string(),
            spelled,
        });
    }
    Ok(())
}

/// A repository path (`library/nginx`): components by the grammar, no tag or digest.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    path.split('/').try_for_each(check_component)
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
            let ours = ImageName::parse(&input).ok();
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

    #[test]
    fn a_named_reference_keeps_what_was_written_and_adds_no_tag() {
        let d = format!("sha256:{}", "d".repeat(64));
        let n = |s: &str| Named::parse(s).unwrap();
        assert!(n("busybox").is_name_only());
        assert_eq!(n("busybox").to_string(), "docker.io/library/busybox");
        assert_eq!(n("busybox").name(), "docker.io/library/busybox");
        assert_eq!(
            n(&format!("busybox:1@{d}")).to_string(),
            format!("docker.io/library/busybox:1@{d}")
        );
        assert_eq!(
            n("index.docker.io/team/app:1").to_string(),
            "docker.io/team/app:1"
        );
        // A signature's reference is held to the grammar only, not to the spelling rule.
        assert_eq!(n("127.1:5000/x:1").domain, "127.1:5000");
        assert!(Named::parse(&"a".repeat(64)).is_err(), "an image ID");
        assert!(ImageName::parse(&"a".repeat(64)).is_err(), "an image ID");
        assert!(Named::parse("UPPER").is_err());
        // The whole name, registry included, is at most 255 characters.
        let long = format!("reg.example/{}", "a".repeat(243));
        assert_eq!(long.len(), 255);
        assert!(Named::parse(&long).is_ok());
        assert!(Named::parse(&format!("{long}a")).is_err());
    }

    #[test]
    fn the_identity_is_the_tag_or_else_the_digest_and_sign_prefers_the_tag() {
        let d = format!("sha256:{}", "e".repeat(64));
        let i = |s: &str| ImageName::parse(s).unwrap().identity().to_string();
        assert_eq!(i("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(i("reg:5000/x:1"), "reg:5000/x:1");
        assert_eq!(i(&format!("x@{d}")), format!("docker.io/library/x@{d}"));
        assert_eq!(i(&format!("x:1@{d}")), format!("docker.io/library/x@{d}"));
        let s = |s: &str| ImageName::parse(s).unwrap().signed_reference();
        assert_eq!(s("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(s(&format!("x@{d}")), format!("docker.io/library/x@{d}"));
        assert_eq!(s(&format!("x:1@{d}")), "docker.io/library/x:1");
    }

    #[test]
    fn registries_are_accepted_only_as_the_http_client_spells_them() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "reg.example:5000",
            "reg.example",
            "123.example.com",
            "1e100.net",
            "a-b.example",
            "localhost",
            "reg.example:65535",
        ] {
            check_registry_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            ImageName::parse(&format!("{ok}/x")).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let refused = |r: &str| {
            let e = check_registry_name(r).expect_err(r).to_string();
            let image = ImageName::parse(&format!("{r}/x"))
                .expect_err(r)
                .to_string();
            assert!(image.contains(&e), "{image} / {e}");
            e
        };
        let spelled = |r: &str, canonical: &str| {
            let e = refused(r);
            assert!(
                e.contains(&format!("write \"{canonical}\""))
                    || e.contains(&format!("is spelled \"{canonical}\"")),
                "{r}: {e}"
            );
        };
        for r in [
            "127.1:5000",
            "2130706433:5000",
            "0x7f.1:5000",
            "0X7F.1:5000",
            "0177.0.0.1:5000",
            "127.0.0.01:5000",
            "127.000.000.001:5000",
            "0x7f000001:5000",
            "127.0.1:5000",
        ] {
            spelled(r, "127.0.0.1:5000");
        }
        spelled("LOCALHOST:5000", "localhost:5000");
        spelled("Localhost:5000", "localhost:5000");
        spelled("Reg.Example.COM", "reg.example.com");
        spelled("localhost:029204", "localhost:29204");
        spelled("localhost:05000", "localhost:5000");
        for r in ["reg.example:443", "reg.example:0443", "reg.example:80"] {
            let e = refused(r);
            assert!(
                e.contains("write \"reg.example\"") && e.contains("default port"),
                "{e}"
            );
        }
        for r in [
            "localhost:0",
            "localhost:65536",
            "localhost:99999",
            "localhost:000000000000000000000005000",
        ] {
            let e = refused(r);
            assert!(
                e.contains("not between 1 and 65535") || e.contains("\"localhost:5000\""),
                "{r}: {e}"
            );
        }
        for r in ["0:5000", "0.0.0.0:5000"] {
            assert!(refused(r).contains("unspecified"), "{r}");
        }
        for r in ["1.2.3.09:5000", "999.1.1.1", "example.123", "example.0x1"] {
            assert!(
                refused(r).contains("not a host name or IPv4 address"),
                "{r}"
            );
        }
        // IPv6 is refused by the grammar itself, as in containers/image.
        assert!(check_registry_name("[::1]:5000").is_err());
        assert!(ImageName::parse("[::1]:5000/x").is_err());
        // The exact message, naming the spelling to write.
        assert_eq!(
            check_registry_name("127.1:5000").unwrap_err().to_string(),
            "the registry \"127.1:5000\" is spelled \"127.0.0.1:5000\" by the HTTP client; \
             write that (the trust policy and registries.conf compare registries as written)"
        );
    }
}
