//! The sidecar marketplace from the command line: `wpod push`, `wpod sign`, `wpod key
//! generate`, `wpod search`, `wpod inspect REF`, and the permission review `wpod pull` shows for
//! a Wasm sidecar (with its approval and its compilation into the cache).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use wpod::component::Interface;
use wpod::grants::inspect::ComponentReport;
use wpod::oci::approvals::{Approval, Approvals, Decision};
use wpod::oci::artifact::{self, DESCRIPTION, TITLE, VERSION};
use wpod::oci::pull::StoredSidecar;
use wpod::oci::reference::ImageName;
use wpod::oci::remote::{self, Remote};
use wpod::oci::signature;

use crate::cli::Output;

/// `result` with "cannot VERB IMAGE" in front of its error, unless the error names the image
/// already (most registry errors do): the image is said once.
pub fn about_image<T, E>(result: Result<T, E>, verb: &str, image: &str) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.map_err(|e| {
        let named = e.to_string().contains(image);
        let e = anyhow::Error::new(e);
        if named {
            e
        } else {
            e.context(format!("cannot {verb} {image}"))
        }
    })
}

/// `text` made safe for a terminal: what a registry, a publisher, a container or a pod's journal
/// wrote, its control characters (ESC, CR, C1 and the rest), bidi overrides, isolates and marks
/// and line separators written as escapes ([`wpod::logs::escape_controls`]). Every such string
/// goes through it before it is printed as text (JSON output is escaped by serde); a table pads
/// what this returns, so its widths are those of what is printed.
pub fn safe(text: &str) -> Cow<'_, str> {
    let escaped = wpod::logs::escape_controls(text);
    // A tab is harmless in a container's output, but in a name it breaks a table's columns.
    if escaped.contains('\t') {
        Cow::Owned(escaped.replace('\t', "\\t"))
    } else {
        escaped
    }
}

/// The same for text of several lines (an error and its causes, a report): each line escaped,
/// the newlines between them kept so that it stays readable.
pub fn safe_lines(text: &str) -> String {
    text.split('\n').map(safe).collect::<Vec<_>>().join("\n")
}

/// `wpod inspect`'s report of a component, as text: every name escaped before it is padded (the
/// names of `wpod inspect REF` come from the registry's config, unchecked).
pub fn report_text(report: &ComponentReport) -> String {
    let mut out = String::from("imports:\n");
    for i in &report.imports {
        out.push_str(&format!("  {:<40} {}\n", safe(&i.name), i.rule));
    }
    out.push_str("exports:\n");
    for e in &report.exports {
        out.push_str(&format!("  {}\n", safe(e)));
    }
    out
}

/// A runtime for one command's registry work.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The password of a private key: `$WPOD_KEY_PASSWORD`, else cosign's `$COSIGN_PASSWORD`, else
/// none.
/// A key's password from the environment, as cosign reads it (`COSIGN_PASSWORD`, or wpod's
/// `WPOD_KEY_PASSWORD`); set but empty means no password.
fn password_from_env() -> Option<Vec<u8>> {
    std::env::var_os("WPOD_KEY_PASSWORD")
        .or_else(|| std::env::var_os("COSIGN_PASSWORD"))
        .map(|p| p.into_encoded_bytes())
}

/// The password that opens the signing key `pem`, as cosign finds it: none for a key that is
/// not encrypted; else from the environment, asked for on a terminal, or read from stdin.
fn key_password(pem: &str) -> anyhow::Result<Vec<u8>> {
    if !pem.contains("ENCRYPTED") {
        return Ok(Vec::new());
    }
    if let Some(p) = password_from_env() {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Enter password for private key: ")
            .context("cannot read the password from the terminal")?;
        return Ok(p.into_bytes());
    }
    let mut piped = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(std::io::stdin(), 4096), &mut piped)
        .context("cannot read the password from stdin")?;
    while piped.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        piped.pop();
    }
    Ok(piped)
}

/// The password a new key is encrypted with: from the environment, or asked for twice on the
/// terminal; none only when asked for (`--no-password`).
fn new_key_password(no_password: bool) -> anyhow::Result<Vec<u8>> {
    if no_password {
        return Ok(Vec::new());
    }
    if let Some(p) = password_from_env() {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "the key needs a password: set COSIGN_PASSWORD (or WPOD_KEY_PASSWORD), run this on a \
             terminal to be asked for one, or pass --no-password for a key anyone who reads it can \
             use"
        );
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).context("cannot read the password from the terminal")
    };
    let first = read("Enter password for private key: ")?;
    let again = read("Enter password for private key again: ")?;
    if first != again {
        bail!("the passwords do not match; nothing was written");
    }
    Ok(first.into_bytes())
}

pub fn push(
    component: &Path,
    image: &str,
    annotations: &[String],
    output: Output,
) -> anyhow::Result<ExitCode> {
    let name = ImageName::parse(image)?;
    if name.digest.is_some() {
        bail!(
            "push to a tag ({}:TAG), not to a digest: the digest is the content's",
            name.repository_name()
        );
    }
    let bytes = wpod::files::read_regular(component, wpod::files::MAX_COMPONENT_BYTES)?;
    let mut notes = BTreeMap::new();
    if let Some(stem) = component.file_stem() {
        notes.insert(TITLE.to_string(), stem.to_string_lossy().to_string());
    }
    if let Some(tag) = name.tag.as_deref().filter(|t| *t != "latest") {
        notes.insert(VERSION.to_string(), tag.to_string());
    }
    for a in annotations {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--annotation {a:?}: write KEY=VALUE, e.g. --annotation {DESCRIPTION}=\"Exports redis metrics\"");
        };
        notes.insert(k.to_string(), v.to_string());
    }
    let artifact = artifact::build(&bytes, notes, &artifact::created_now())
        .with_context(|| format!("cannot publish {}", component.display()))?;
    let remote = Remote::new(&name)?;
    about_image(
        runtime()?.block_on(remote.push_artifact(&artifact, bytes)),
        "push",
        &name.canonical(),
    )?;
    let pinned = format!("{}@{}", name.canonical(), artifact.digest);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"event": "pushed", "image": name.canonical(), "digest": artifact.digest, "reference": pinned, "imports": artifact.interface.imports})
        ),
        Output::Text => println!("{pinned}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `wpod kube build`: the runner image of `component`, pushed to `image` (or written to
/// `archive`); prints `IMAGE@DIGEST`.
pub fn kube_build(
    component: &Path,
    image: &str,
    archive: Option<&Path>,
    wpod: Option<&Path>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let name = ImageName::parse(image)?;
    if name.digest.is_some() {
        bail!(
            "build to a tag ({}:TAG), not to a digest: the digest is the content's",
            name.repository_name()
        );
    }
    let own = std::env::current_exe().context("cannot find this wpod binary")?;
    // A component file, or a sidecar pulled (and so reviewed) into the store by reference.
    let stored = match component.exists() {
        true => None,
        false => {
            let store = wpod::oci::store::Store::open()?;
            let name = component.to_str().and_then(|r| ImageName::parse(r).ok());
            let found = match name {
                Some(n) => {
                    let approvals = wpod::oci::approvals::Approvals::load()?;
                    wpod::kube::generate::stored_sidecar(&store, &n, &approvals)
                        .map_err(anyhow::Error::msg)?
                        .map(|s| s.component)
                }
                None => None,
            };
            Some(found.with_context(|| {
                format!(
                    "{}: no such file, nor a Wasm sidecar in wpod's store (pull it first: wpod pull REF)",
                    component.display()
                )
            })?)
        }
    };
    let file = stored.as_ref().map_or(component, |s| s.path.as_path());
    let built = wpod::kube::build::build(wpod.unwrap_or(&own), file)
        .with_context(|| format!("cannot build the runner image of {}", component.display()))?;
    match archive {
        Some(path) => wpod::kube::build::write_archive(&built, &name, path)?,
        None => {
            let remote = Remote::new(&name)?;
            let blobs = vec![
                (built.layer.clone(), built.layer_digest.clone()),
                (built.config.clone(), built.config_digest.clone()),
            ];
            about_image(
                runtime()?.block_on(remote.push_image(blobs, built.manifest.clone())),
                "push",
                &name.canonical(),
            )?;
        }
    }
    let pinned = format!("{}@{}", name.canonical(), built.digest);
    if built.shared_libraries > 0 && output == Output::Text {
        eprintln!(
            "note: {} is dynamically linked: the image holds it with its {} shared libraries; \
             runner/build.sh builds the static wpod a runner image is meant to hold (--wpod)",
            wpod.unwrap_or(&own).display(),
            built.shared_libraries
        );
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"event": "built", "image": name.canonical(), "digest": built.digest.to_string(), "reference": pinned, "component": built.component_digest, "bytes": built.layer.len(), "sharedLibraries": built.shared_libraries, "archive": archive})
        ),
        Output::Text => println!("{pinned}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sign(image: &str, key: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let name = ImageName::parse(image)?;
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read the private key {}", key.display()))?;
    let password = key_password(&pem)?;
    let remote = Remote::new(&name)?;
    let rt = runtime()?;
    let (digest, tag) = about_image(
        rt.block_on(async {
            let digest = remote.resolve().await?;
            let tag = remote.sign(&digest, &pem, &password).await?;
            Ok::<_, wpod::oci::remote::RemoteError>((digest, tag))
        }),
        "sign",
        &name.canonical(),
    )?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"event": "signed", "image": name.canonical(), "digest": digest, "signatureTag": tag})
        ),
        Output::Text => println!(
            "signed {}@{digest} (signature at tag {tag})",
            name.repository_name()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn key_generate(name: &str, no_password: bool, output: Output) -> anyhow::Result<ExitCode> {
    let private = format!("{name}.key");
    let public = format!("{name}.pub");
    for p in [&private, &public] {
        if Path::new(p).exists() {
            bail!("{p} exists; remove it or choose another name (wpod never overwrites a key)");
        }
    }
    let password = new_key_password(no_password)?;
    let (key, pubkey) = signature::generate_key(&password)?;
    write_new(&private, &key, 0o600)?;
    write_new(&public, &pubkey, 0o644)?;
    if password.is_empty() {
        eprintln!("warning: {private} has no password: anyone who reads it can sign as you");
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"event": "keyGenerated", "privateKey": private, "publicKey": public})
        ),
        Output::Text => {
            println!("wrote {private} (keep it secret) and {public} (for policy.json's keyPath)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    wpod::files::write_new(std::path::Path::new(path), text.as_bytes(), mode)
        .with_context(|| format!("cannot create {path}"))?;
    Ok(())
}

/// `wpod inspect REF`: a sidecar on its registry, from its manifest and config (nothing is
/// downloaded, so nothing here is checked against the component's bytes: `wpod pull` does that).
pub fn inspect_remote(image: &str, output: Output) -> anyhow::Result<ExitCode> {
    let name = ImageName::parse(image)?;
    let remote = Remote::new(&name)?;
    let described = about_image(
        runtime()?.block_on(remote.describe()),
        "inspect",
        &name.canonical(),
    )?;
    let Some(d) = described else {
        bail!(
            "{} is a container image, not a Wasm sidecar; `wpod pull` it to run it",
            name.canonical()
        );
    };
    let interface = Interface {
        imports: d
            .config
            .component
            .as_ref()
            .map(|c| c.imports.clone())
            .unwrap_or_default(),
        exports: d
            .config
            .component
            .as_ref()
            .map(|c| c.exports.clone())
            .unwrap_or_default(),
    };
    let report = ComponentReport::of(interface);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "image": d.image, "digest": d.digest, "annotations": d.annotations,
                "signer": d.signer.to_string(), "source": "config", "imports": report.imports, "exports": report.exports,
            }))?
        ),
        Output::Text => {
            // Everything here is the registry's or the publisher's word: escaped.
            println!("{}@{}", safe(&d.image), d.digest);
            for (k, v) in &d.annotations {
                println!("  {}: {}", safe(k), safe(v));
            }
            println!("  signer: {}", safe(&d.signer.to_string()));
            println!("(from the artifact's config, before download: `wpod pull` recomputes the imports from the component itself)");
            print!("{}", report_text(&report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One search result.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    name: String,
    version: String,
    digest: String,
    description: String,
    /// The key of the trust policy a signature verifies with, "unsigned", or "signed (by no
    /// key of the trust policy)".
    signer: String,
    /// The Pod fields it needs (its `Requires` imports), and what no field grants.
    needs: Vec<String>,
}

/// `wpod search [REGISTRY/]TERM`: the catalog of each registry (the one named, else
/// registries.conf's `unqualified-search-registries`), each repository's newest version, its
/// config and annotations, and its signer under the trust policy.
pub fn search(query: &str, output: Output) -> anyhow::Result<ExitCode> {
    let looks_like_registry = |r: &str| r.contains('.') || r.contains(':') || r == "localhost";
    let (registries, term) = match query.split_once('/') {
        Some((r, t)) if looks_like_registry(r) => (vec![r.to_string()], t.to_string()),
        _ => {
            let conf = wpod::oci::registries::Registries::load()?;
            if conf.search.is_empty() {
                bail!(
                    "name the registry to search (wpod search REGISTRY/TERM, e.g. 127.0.0.1:5000/exporter), \
                     or list registries in unqualified-search-registries of registries.conf"
                );
            }
            (conf.search, query.to_string())
        }
    };
    let rt = runtime()?;
    let mut found = Vec::new();
    let mut skipped = 0usize;
    for registry in &registries {
        let repositories = about_image(rt.block_on(remote::catalog(registry)), "search", registry)?;
        for repo in repositories {
            match rt.block_on(describe_newest(registry, &repo)) {
                Ok(Some(f)) if matches(&f, &repo, &term) => found.push(f),
                Ok(Some(_)) => {}
                Ok(None) => skipped += 1,
                Err(e) => eprintln!(
                    "warning: {}/{} skipped: {}",
                    safe(registry),
                    safe(&repo),
                    safe_lines(&format!("{e:#}"))
                ),
            }
        }
        if skipped > 0 {
            eprintln!(
                "({skipped} repositories on {} hold container images or no tags: not listed)",
                safe(registry)
            );
            skipped = 0;
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&found)?),
        Output::Text => {
            use crate::table::{Align::*, Table};
            let mut table = Table::new(&[
                ("NAME", Left),
                ("VERSION", Left),
                ("SIGNER", Left),
                ("NEEDS", Left),
                ("DESCRIPTION", Left),
            ]);
            for f in &found {
                let needs = if f.needs.is_empty() {
                    "-".to_string()
                } else {
                    f.needs.join(",")
                };
                // Names, tags, descriptions and the imports in `needs` are the registry's:
                // the table escapes them before it pads them.
                table.row([&f.name, &f.version, &f.signer, &needs, &f.description]);
            }
            table.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn matches(f: &Found, repo: &str, term: &str) -> bool {
    let t = term.to_lowercase();
    [repo, &f.description]
        .iter()
        .any(|s| s.to_lowercase().contains(&t))
}

/// The newest version of `registry/repo` as a search result; `None` when it is not a sidecar or
/// has no tags.
async fn describe_newest(registry: &str, repo: &str) -> anyhow::Result<Option<Found>> {
    let name = ImageName::parse(&format!("{registry}/{repo}"))?;
    let Some(version) = latest_version(&Remote::new(&name)?.tags().await?) else {
        return Ok(None);
    };
    let tagged = ImageName::parse(&format!("{registry}/{repo}:{version}"))?;
    let Some(d) = Remote::new(&tagged)?.describe().await? else {
        return Ok(None);
    };
    let imports = d.config.component.map(|c| c.imports).unwrap_or_default();
    let mut needs: Vec<String> = imports
        .iter()
        .filter_map(|i| match wpod::grants::for_import(i) {
            wpod::grants::ImportRule::Requires { field, .. } => Some(field.to_string()),
            wpod::grants::ImportRule::Never => Some(format!("(ungrantable: {i})")),
            _ => None,
        })
        .collect();
    needs.sort();
    needs.dedup();
    Ok(Some(Found {
        name: format!("{registry}/{repo}"),
        version,
        digest: d.digest.to_string(),
        description: d.annotations.get(DESCRIPTION).cloned().unwrap_or_default(),
        signer: d.signer.to_string(),
        needs,
    }))
}

/// The newest version among `tags`: the highest `v`-optional dotted number, else `latest`, else
/// the last tag.
fn latest_version(tags: &[String]) -> Option<String> {
    let numeric = |t: &str| -> Option<Vec<u64>> {
        t.trim_start_matches('v')
            .split(['.', '-'])
            .map(|p| p.parse().ok())
            .collect()
    };
    tags.iter()
        .filter_map(|t| numeric(t).map(|n| (n, t)))
        .max()
        .map(|(_, t)| t.clone())
        .or_else(|| tags.iter().find(|t| *t == "latest").cloned())
        .or_else(|| tags.last().cloned())
}

/// How `wpod pull` approves a sidecar.
pub struct ReviewOptions {
    pub yes: bool,
    pub allow_ungrantable: bool,
    /// Every import listed, the always-granted ones too.
    pub all: bool,
    pub output: Output,
}

/// The review's import lines: the ones no Pod field grants, then those a field must grant or
/// scopes; those every sidecar has folded into one line unless `all`.
fn review_lines(report: &ComponentReport, all: bool) -> Vec<String> {
    use wpod::grants::ImportRule;
    let rank = |r: &ImportRule| match r {
        ImportRule::Never => 0,
        ImportRule::Requires { .. } => 1,
        ImportRule::Scoped { .. } => 2,
        ImportRule::Always { .. } => 3,
    };
    let mut imports: Vec<_> = report.imports.iter().collect();
    imports.sort_by_key(|i| rank(&i.rule));
    let (always, rest): (Vec<_>, Vec<_>) = imports
        .into_iter()
        .partition(|i| matches!(i.rule, ImportRule::Always { .. }));
    let mut lines: Vec<String> = rest
        .iter()
        .map(|i| format!("  {:<40} {}", i.name, i.rule))
        .collect();
    if all || always.len() <= 1 {
        lines.extend(
            always
                .iter()
                .map(|i| format!("  {:<40} {}", i.name, i.rule)),
        );
    } else {
        let mut packages: Vec<&str> = always
            .iter()
            .map(|i| i.name.split('/').next().unwrap_or(&i.name))
            .collect();
        packages.sort_unstable();
        packages.dedup();
        lines.push(format!(
            "  and {} interfaces every sidecar has ({}: clocks, random, I/O, its own stdio, env and lifecycle); --all lists them",
            always.len(),
            packages.join(", ")
        ));
    }
    lines
}

/// The permission review of a pulled sidecar: what each import lets it do and the Pod field
/// that grants it, the diff against the repository's last approval, then the approval itself
/// (interactive on a terminal, `--yes` otherwise) and compilation into the cache.
pub fn review(
    name: &ImageName,
    s: &StoredSidecar,
    opts: &ReviewOptions,
) -> anyhow::Result<ExitCode> {
    let repository = name.repository_name();
    let digest = &s.record.digest;
    let mut approvals = Approvals::load()?;
    let report = ComponentReport::of(Interface {
        imports: s.sidecar.imports.clone(),
        exports: s.sidecar.exports.clone(),
    });
    let decision = approvals.decide(
        &repository,
        name.tag.as_deref(),
        digest,
        &s.sidecar.imports,
        wpod::grants::always_granted,
    );
    let needs_approval = decision.needs_approval();
    let (previous, diff) = match decision {
        Decision::Approved(a) => (Some(a.clone()), None),
        Decision::New => (None, None),
        Decision::Upgrade { from, diff, .. } => (None, Some((from.digest.clone(), diff))),
    };
    let ungrantable = report.ungrantable();
    match opts.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "event": "review", "image": name.canonical(), "digest": digest,
                "signedBy": s.record.signed_by, "annotations": s.annotations,
                "imports": report.imports, "ungrantable": ungrantable,
                "approvedBefore": previous.is_some(),
                "diff": diff.as_ref().map(|(from, d)| serde_json::json!({"from": from, "added": d.added, "removed": d.removed, "versionChanged": d.version_changed})),
                "needsApproval": needs_approval,
            })
        ),
        Output::Text => {
            // The publisher writes the annotations (title, version, description) and the
            // registry the rest: every string of theirs is escaped, so none can move the cursor
            // and draw over the import list the user approves.
            eprintln!("sidecar {}@{digest}", safe(&name.canonical()));
            for key in [TITLE, VERSION, DESCRIPTION] {
                if let Some(v) = s.annotations.get(key) {
                    eprintln!(
                        "  {:<12} {}",
                        key.rsplit('.').next().unwrap_or(key),
                        safe(v)
                    );
                }
            }
            eprintln!(
                "  {:<12} {}",
                "signed by",
                safe(
                    s.record
                        .signed_by
                        .as_deref()
                        .unwrap_or("(the trust policy asks for no signature)")
                )
            );
            // What matters first: the change since the last approval, then what no field
            // grants, what a Pod field must grant, what a field scopes; the imports every
            // sidecar has are one line (`--all` lists them).
            if let Some((from, d)) = &diff {
                eprintln!("compared with the approved {from}:");
                if d.is_empty() {
                    eprintln!("  the same imports");
                }
                for line in ComponentReport::diff_lines(d) {
                    eprintln!("{}", safe(&line));
                }
            }
            eprintln!("what it may do (from the component's own bytes):");
            for line in review_lines(&report, opts.all) {
                eprintln!("{}", safe(&line));
            }
        }
    }
    if previous.is_none() && !ungrantable.is_empty() && !opts.allow_ungrantable {
        bail!(
            "{} imports {}, which no Pod field grants: no pod can run it. Not approved; pass --allow-ungrantable to approve it anyway",
            name.canonical(),
            ungrantable.join(", ")
        );
    }
    if let Some(p) = &previous {
        say(
            opts.output,
            "approved",
            &format!(
                "already approved on {} ({})",
                p.approved_at,
                approvals.path.display()
            ),
        );
    } else {
        if needs_approval && !opts.yes {
            let what = match &diff {
                Some(_) => "it imports more than the approved version",
                None => "it has not been reviewed before",
            };
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                bail!(
                    "{} needs approval ({what}); nobody can answer a prompt here: rerun with --yes to approve it, \
                     or approve it into a checked-in file with WPOD_APPROVALS=FILE wpod pull --yes {}",
                    name.canonical(),
                    name.canonical()
                );
            }
            eprint!(
                "approve {} to do the above ({what})? [y/N] ",
                safe(&name.canonical())
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!(
                    "not approved: pods will not run {}@{digest}",
                    name.canonical()
                );
            }
        }
        approvals.approve(Approval {
            repository: repository.clone(),
            digest: digest.clone(),
            kind: wpod::oci::approvals::ArtifactKind::Sidecar,
            tag: name.tag.clone(),
            imports: s.sidecar.imports.clone(),
            approved_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
        })?;
        let how = if needs_approval {
            "approved"
        } else {
            "approved: it imports nothing more than the approved version"
        };
        say(
            opts.output,
            "approved",
            &format!("{how} ({})", approvals.path.display()),
        );
    }
    let started = std::time::Instant::now();
    let engine = wpod::sidecars::engine::shared()?;
    // A spinner on a terminal: a Python or JavaScript sidecar takes ten seconds or more.
    let progress = crate::CompileProgress::new(opts.output == Output::Text);
    let (_, source) =
        wpod::sidecars::cache::locate(engine, &s.component, Some(&s.sidecar.component))
            .and_then(|located| {
                use wpod::sidecars::CompileObserver;
                if located.is_cached() {
                    return located.load(engine);
                }
                progress.compiling(&name.canonical(), &s.component, located.size());
                let loaded = located.load(engine);
                progress.compiled(&name.canonical(), &s.component, started.elapsed());
                loaded
            })
            .with_context(|| format!("cannot compile {}", name.canonical()))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let message = match source {
        wpod::sidecars::cache::Source::Cache => "already compiled in the cache".to_string(),
        wpod::sidecars::cache::Source::Compiled => format!("compiled into the cache in {ms:.0} ms"),
    };
    say(opts.output, "compiled", &message);
    Ok(ExitCode::SUCCESS)
}

fn say(output: Output, event: &str, message: &str) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"event": event, "message": message})
        ),
        Output::Text => eprintln!("{}", safe(message)),
    }
}
