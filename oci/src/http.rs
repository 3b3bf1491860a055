//! Reading from a registry: every request wpod makes to read manifests, blobs, tag lists and
//! catalogs, and the token exchange before them, with what oci-client's reads lacked.
//!
//! - **Sizes**: every body is read under a cap whatever the registry says it is (manifests
//!   4 MiB as the distribution spec suggests, tokens 1 MiB, list pages 1 MiB and 100 entries,
//!   error bodies 64 KiB); a blob's under its manifest's size, by the caller. An endless
//!   manifest once took a pull to 5.7 GiB in six seconds.
//! - **Time**: every request has a total deadline, body included (30 s, a blob 60 s plus a
//!   second per 256 KiB it declares), not a read timeout that restarts on every byte: a
//!   registry sending a byte every 50 s no longer holds a pull forever.
//! - **Credentials**: Basic credentials go to a token service only over HTTPS, or over plain
//!   HTTP when registries.conf marks the registry itself `insecure` (the operator's choice to
//!   talk to it in the clear). A registry naming an `http://` realm otherwise gets nothing, and
//!   the pull fails saying why. Redirects never leave HTTPS for a registry that is not
//!   insecure.
//!
//! Pushes still go through oci-client, with a bearer token obtained here (so it never talks
//! to a token service itself) and each call under a deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use reqwest::{header, StatusCode, Url};

use super::client::{BlobStream, FetchError};
use super::registries::Source;

/// The largest manifest wpod reads (the distribution spec's suggested limit).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest token answer (containers/image's limit).
pub const MAX_TOKEN_BYTES: usize = 1 << 20;
/// The largest page of a tag list or catalog.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Entries wpod asks for per page, and accepts.
pub const PAGE: usize = 100;
/// The longest tag or repository name in a list.
const MAX_NAME: usize = 256;
/// The most of an error answer kept for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// The deadline of a request for anything but a blob.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// A blob's deadline grows with its size at this rate.
const BLOB_MIN_RATE: u64 = 256 << 10;

/// The deadline for a blob of `size` bytes: a minute, and a second per 256 KiB.
pub fn blob_deadline(size: u64) -> Duration {
    Duration::from_secs(60 + size / BLOB_MIN_RATE)
}

/// How the registry asks to be authenticated (its answer to `GET /v2/`).
#[derive(Clone, Debug)]
enum Challenge {
    None,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// One registry, as a source of registries.conf names it.
pub struct Registry {
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    insecure: bool,
    auth: RegistryAuth,
    challenge: tokio::sync::OnceCell<Challenge>,
    /// Bearer tokens by scope, with when they stop being good.
    tokens: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl Registry {
    /// The registry `source` names, with `auth` (the credentials kept for its host).
    pub fn new(source: &Source, auth: RegistryAuth) -> Result<Self, FetchError> {
        // rustls without aws-lc: ring is the provider (installed once per process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let insecure = source.insecure;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(insecure)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if attempt.url().scheme() != "https" && !insecure {
                    attempt.error("a redirect off HTTPS")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| FetchError::Registry(format!("cannot make an HTTP client: {e}")))?;
        Ok(Registry {
            http,
            scheme: if insecure { "http" } else { "https" },
            insecure,
            auth,
            challenge: tokio::sync::OnceCell::new(),
            tokens: Default::default(),
        })
    }

    fn url(&self, reference: &Reference, path: &str) -> Result<Url, FetchError> {
        let text = format!(
            "{}://{}/v2/{path}",
            self.scheme,
            reference.resolve_registry()
        );
        Url::parse(&text).map_err(|e| FetchError::Registry(format!("{text}: {e}")))
    }

    /// The manifest `reference` names, as served (at most 4 MiB), with its digest: the sha256
    /// of the bytes, which must be the one the reference pins and the one the registry says.
    pub async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String), FetchError> {
        let what = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let url = self.url(
            reference,
            &format!("{}/manifests/{what}", reference.repository()),
        )?;
        let scope = format!("repository:{}:pull", reference.repository());
        let mut res = self
            .get(url, &scope, Some(&accept.join(", ")), DEADLINE)
            .await?;
        let said = res
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(&mut res, MAX_MANIFEST_BYTES, "manifest").await?;
        let digest = {
            use sha2::Digest as _;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
        };
        for claimed in [reference.digest().map(str::to_string), said]
            .into_iter()
            .flatten()
            .filter(|d| d.starts_with("sha256:"))
        {
            if claimed != digest {
                return Err(FetchError::Mismatch {
                    expected: claimed,
                    actual: digest,
                });
            }
        }
        Ok((body, digest))
    }

    /// The blob `digest` of `reference`'s repository, as it streams, within the deadline of
    /// `size` bytes (the caller caps the bytes themselves).
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<BlobStream, FetchError> {
        let url = self.url(
            reference,
            &format!("{}/blobs/{digest}", reference.repository()),
        )?;
        let scope = format!("repository:{}:pull", reference.repository());
        let res = self.get(url, &scope, None, blob_deadline(size)).await?;
        Ok(Box::pin(res.bytes_stream().map(|chunk| {
            chunk
                .map(|b| b.to_vec())
                .map_err(|e| std::io::Error::other(describe(&e)))
        })))
    }

    /// One page of the repository's tags (at most [`PAGE`]), after `last`.
    pub async fn tags_page(
        &self,
        reference: &Reference,
        last: Option<&str>,
    ) -> Result<Vec<String>, FetchError> {
        let mut url = self.url(reference, &format!("{}/tags/list", reference.repository()))?;
        page_query(&mut url, last);
        let scope = format!("repository:{}:pull", reference.repository());
        let mut res = self.get(url, &scope, None, DEADLINE).await?;
        let body = read_capped(&mut res, MAX_PAGE_BYTES, "tag list").await?;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let tags: Tags = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Registry(format!("tag list: {e}")))?;
        checked_page(tags.tags.unwrap_or_default(), "tag list")
    }

    /// One page of the registry's catalog (at most [`PAGE`] repositories), after `last`.
    pub async fn catalog_page(
        &self,
        reference: &Reference,
        last: Option<&str>,
    ) -> Result<Vec<String>, FetchError> {
        let mut url = self.url(reference, "_catalog")?;
        page_query(&mut url, last);
        let mut res = self.get(url, "registry:catalog:*", None, DEADLINE).await?;
        let body = read_capped(&mut res, MAX_PAGE_BYTES, "catalog").await?;
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let catalog: Catalog = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Registry(format!("catalog: {e}")))?;
        checked_page(catalog.repositories, "catalog")
    }

    /// What oci-client gets for a push to `reference`: a bearer token made here (so it never
    /// talks to a token service itself), Basic credentials only for a registry that asks for
    /// Basic itself, else nothing.
    pub async fn oci_auth(
        &self,
        reference: &Reference,
        push: bool,
    ) -> Result<RegistryAuth, FetchError> {
        let scope = match push {
            true => format!("repository:{}:pull,push", reference.repository()),
            false => format!("repository:{}:pull", reference.repository()),
        };
        match self.challenge(reference).await? {
            Challenge::None => Ok(RegistryAuth::Anonymous),
            Challenge::Basic => Ok(self.auth.clone()),
            Challenge::Bearer { .. } => match self.token(reference, &scope, false).await? {
                Some(token) => Ok(RegistryAuth::Bearer(token)),
                None => Ok(RegistryAuth::Anonymous),
            },
        }
    }

    /// How the registry wants to be asked: `GET /v2/` once per registry.
    async fn challenge(&self, reference: &Reference) -> Result<Challenge, FetchError> {
        self.challenge
            .get_or_try_init(|| async {
                let url = self.url(reference, "")?;
                let mut res = self
                    .http
                    .get(url)
                    .timeout(DEADLINE)
                    .send()
                    .await
                    .map_err(|e| FetchError::Registry(describe(&e)))?;
                let header = res
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = read_capped(&mut res, MAX_ERROR_BYTES, "answer").await;
                Ok(match header {
                    None => Challenge::None,
                    Some(h) => parse_challenge(&h),
                })
            })
            .await
            .cloned()
    }

    /// The bearer token for `scope`, from the token service the registry named (cached until
    /// it expires; `fresh` asks again).
    async fn token(
        &self,
        reference: &Reference,
        scope: &str,
        fresh: bool,
    ) -> Result<Option<String>, FetchError> {
        let Challenge::Bearer { realm, service } = self.challenge(reference).await? else {
            return Ok(None);
        };
        let mut tokens = self.tokens.lock().await;
        if !fresh {
            if let Some((token, until)) = tokens.get(scope) {
                if Instant::now() < *until {
                    return Ok(Some(token.clone()));
                }
            }
        }
        let credentials = match &self.auth {
            RegistryAuth::Basic(user, password) => Some((user.clone(), password.clone())),
            _ => None,
        };
        let clear_text = realm.scheme() != "https";
        if credentials.is_some() && clear_text && !(self.insecure && realm.scheme() == "http") {
            return Err(FetchError::Registry(format!(
                "{} names the token service {realm}, which is not HTTPS: wpod sends credentials \
                 in the clear only to a registry registries.conf marks insecure",
                reference.resolve_registry()
            )));
        }
        if !matches!(realm.scheme(), "https" | "http") {
            return Err(FetchError::Registry(format!(
                "{} names the token service {realm}: not an HTTP URL",
                reference.resolve_registry()
            )));
        }
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.http.get(url).timeout(DEADLINE);
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let mut res = request.send().await.map_err(|e| {
            FetchError::Registry(format!("token service {realm}: {}", describe(&e)))
        })?;
        if !res.status().is_success() {
            let status = res.status();
            let body = read_capped(&mut res, MAX_ERROR_BYTES, "answer")
                .await
                .unwrap_or_default();
            return Err(FetchError::Registry(format!(
                "token service {realm} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let body = read_capped(&mut res, MAX_TOKEN_BYTES, "token").await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Token = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Registry(format!("token service {realm}: {e}")))?;
        let Some(token) = answer.token.or(answer.access_token) else {
            return Err(FetchError::Registry(format!(
                "token service {realm} gave no token"
            )));
        };
        // The distribution spec's default lifetime is 60 s; a little early is safe.
        let lasts = Duration::from_secs(answer.expires_in.unwrap_or(60).max(60).saturating_sub(10));
        tokens.insert(scope.to_string(), (token.clone(), Instant::now() + lasts));
        Ok(Some(token))
    }

    /// `GET url` with the authorization `scope` needs, within `deadline` (body included);
    /// once more with a fresh token after a 401. A 404 is `NotFound`; other failures say what
    /// the registry answered.
    async fn get(
        &self,
        url: Url,
        scope: &str,
        accept: Option<&str>,
        deadline: Duration,
    ) -> Result<reqwest::Response, FetchError> {
        let reference = reference_of(&url)?;
        let challenge = self.challenge(&reference).await?;
        for attempt in 0..2 {
            let mut request = self.http.get(url.clone()).timeout(deadline);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            request = match (&challenge, &self.auth) {
                (Challenge::Bearer { .. }, _) => {
                    match self.token(&reference, scope, attempt > 0).await? {
                        Some(token) => request.bearer_auth(token),
                        None => request,
                    }
                }
                (Challenge::Basic, RegistryAuth::Basic(user, password)) => {
                    request.basic_auth(user, Some(password))
                }
                _ => request,
            };
            let mut res = request
                .send()
                .await
                .map_err(|e| FetchError::Registry(describe(&e)))?;
            let status = res.status();
            if status.is_success() {
                return Ok(res);
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                continue;
            }
            let body = read_capped(&mut res, MAX_ERROR_BYTES, "answer")
                .await
                .unwrap_or_default();
            let said = String::from_utf8_lossy(&body).trim().to_string();
            let unknown = said.contains("MANIFEST_UNKNOWN")
                || said.contains("NAME_UNKNOWN")
                || said.contains("BLOB_UNKNOWN");
            return Err(match status {
                StatusCode::NOT_FOUND => FetchError::NotFound(format!("{url}: not found ({said})")),
                _ if unknown => FetchError::NotFound(format!("{url}: {said}")),
                _ => FetchError::Registry(format!("{url}: {status}: {said}")),
            });
        }
        Err(FetchError::Registry(format!(
            "{url}: unauthorized (401) with a fresh token too"
        )))
    }
}

/// The host (for the challenge) of a registry URL, as a reference to it.
fn reference_of(url: &Url) -> Result<Reference, FetchError> {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(FetchError::Registry(format!("{url}: no host"))),
    };
    Ok(Reference::with_tag(host, "probe".into(), "latest".into()))
}

/// `?n=PAGE&last=...`.
fn page_query(url: &mut Url, last: Option<&str>) {
    let mut query = url.query_pairs_mut();
    query.append_pair("n", &PAGE.to_string());
    if let Some(last) = last {
        query.append_pair("last", last);
    }
}

/// A page of names, refused when it holds more than asked for or names no registry makes.
fn checked_page(names: Vec<String>, what: &str) -> Result<Vec<String>, FetchError> {
    if names.len() > PAGE {
        return Err(FetchError::Registry(format!(
            "the registry's {what} page holds {} entries, more than the {PAGE} asked for",
            names.len()
        )));
    }
    if let Some(long) = names.iter().find(|n| n.len() > MAX_NAME) {
        return Err(FetchError::Registry(format!(
            "the registry's {what} names an entry of {} characters",
            long.len()
        )));
    }
    Ok(names)
}

/// `WWW-Authenticate`: Bearer with a realm, else Basic.
fn parse_challenge(header: &str) -> Challenge {
    for challenge in http_auth::parser::ChallengeParser::new(header).flatten() {
        if !challenge.scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if let Some(realm) = param("realm").and_then(|r| Url::parse(&r).ok()) {
            return Challenge::Bearer {
                realm,
                service: param("service"),
            };
        }
    }
    Challenge::Basic
}

/// The body of `res`, at most `cap` bytes whatever its length says (refused at once when its
/// length says more).
async fn read_capped(
    res: &mut reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let too_large = || {
        FetchError::Registry(format!(
            "the registry's {what} is larger than the {} KiB wpod reads",
            cap >> 10
        ))
    };
    if res.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| FetchError::Registry(format!("reading the {what}: {}", describe(&e))))?
    {
        if out.len() + chunk.len() > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A request's failure, with its deadline named when that is what ended it.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!(
            "no complete answer within its deadline ({})",
            crate::error::chain(e)
        )
    } else {
        crate::error::chain(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_their_realm() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#,
        );
        assert!(
            matches!(&c, Challenge::Bearer { realm, service: Some(s) } if realm.as_str() == "https://auth.example/token" && s == "registry.example"),
            "{c:?}"
        );
        assert!(matches!(
            parse_challenge(r#"Basic realm="x""#),
            Challenge::Basic
        ));
    }

    #[test]
    fn pages_are_bounded() {
        assert!(checked_page(vec!["a".into(); PAGE + 1], "tag list").is_err());
        assert!(checked_page(vec!["a".repeat(MAX_NAME + 1)], "tag list").is_err());
        assert_eq!(checked_page(vec!["v1".into()], "tag list").unwrap(), ["v1"]);
    }
}
