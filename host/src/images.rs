//! `wpod pull`, `wpod images`, `wpod rmi`, `wpod image prune`: the image store from the command
//! line, as podman's commands of the same names.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use wpod::oci::pull::{PullEvent, Pulled, Puller};
use wpod::oci::reference::ImageName;
use wpod::oci::store::Store;

use crate::cli::Output;
use crate::market::safe;

fn store() -> anyhow::Result<Store> {
    Store::open().context("cannot open the image store")
}

pub fn pull(image: &str, review: &crate::market::ReviewOptions) -> anyhow::Result<ExitCode> {
    let name = ImageName::parse(image)?;
    let runtime = crate::market::runtime()?;
    let store = Arc::new(store()?);
    let previous = store.image(&name.canonical())?;
    let puller = Puller::new(store.clone())?;
    let progress = Progress::new(review.output);
    let report = |e: PullEvent| progress.show(e);
    let pulled = crate::market::about_image(
        runtime.block_on(puller.pull(&name, &report)),
        "pull",
        &name.canonical(),
    )?;
    drop(progress);
    match pulled {
        Pulled::Container(_) => Ok(ExitCode::SUCCESS),
        Pulled::Sidecar(s) => reviewed(&store, &name, previous, &s, review),
    }
}

/// The review of a sidecar just pulled; if it is not approved, the name goes back to what it
/// was stored as before (so `repo:tag` keeps resolving to the approved digest), or is
/// forgotten.
fn reviewed(
    store: &Store,
    name: &ImageName,
    previous: Option<wpod::oci::store::ImageRecord>,
    sidecar: &wpod::oci::pull::StoredSidecar,
    review: &crate::market::ReviewOptions,
) -> anyhow::Result<ExitCode> {
    let outcome = crate::market::review(name, sidecar, review);
    if outcome.is_err() && previous.as_ref() != Some(&sidecar.record) {
        let locked = store.lock()?;
        match previous {
            Some(p) => locked.record(p)?,
            None => {
                locked.forget(&name.canonical())?;
            }
        }
    }
    outcome
}

/// How a pull shows its progress: bars per layer on a terminal (as podman), a line per layer
/// otherwise, JSON events with `--output json`.
enum Progress {
    Json,
    Lines,
    Bars {
        bars: indicatif::MultiProgress,
        layers: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    },
}

impl Progress {
    fn new(output: Output) -> Self {
        use std::io::IsTerminal;
        match output {
            Output::Json => Progress::Json,
            Output::Text if std::io::stderr().is_terminal() => Progress::Bars {
                bars: indicatif::MultiProgress::new(),
                layers: Default::default(),
            },
            Output::Text => Progress::Lines,
        }
    }

    fn show(&self, e: PullEvent) {
        match self {
            Progress::Json => json(&e),
            Progress::Lines => line(e),
            Progress::Bars { bars, layers } => match e {
                PullEvent::Progress {
                    digest,
                    done,
                    total,
                } => {
                    let mut layers = layers.lock().unwrap_or_else(|p| p.into_inner());
                    let bar = layers.entry(digest.clone()).or_insert_with(|| {
                        let bar = bars.add(indicatif::ProgressBar::new(total));
                        let style = indicatif::ProgressStyle::with_template(
                            "  layer {msg} {bar:30} {bytes}/{total_bytes}",
                        );
                        if let Ok(style) = style {
                            bar.set_style(style);
                        }
                        bar.set_message(short(&digest).to_string());
                        bar
                    });
                    bar.set_position(done);
                }
                PullEvent::Layer { digest, .. } => {
                    let layers = layers.lock().unwrap_or_else(|p| p.into_inner());
                    match layers.get(&digest) {
                        Some(bar) => bar.finish(),
                        None => {
                            let _ =
                                bars.println(format!("  layer {} already stored", short(&digest)));
                        }
                    }
                }
                other => {
                    bars.suspend(|| line(other));
                }
            },
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..19.min(digest.len())]
}

fn line(e: PullEvent) {
    match e {
        PullEvent::Pulling { image, from } => {
            eprintln!("pulling {} from {}", safe(&image), safe(&from))
        }
        PullEvent::Progress { .. } => {}
        PullEvent::Layer {
            digest,
            size,
            cached,
        } => {
            let what = if cached { "already stored" } else { "done" };
            eprintln!("  layer {} {:>10} bytes  {what}", short(&digest), size);
        }
        PullEvent::Pulled {
            image,
            digest,
            size,
            took,
        } => {
            let image = safe(&image);
            eprintln!(
                "pulled {image} ({size} bytes) in {:.1}s",
                took.as_secs_f64()
            );
            println!("{image}@{}", safe(&digest));
        }
        PullEvent::AlreadyPresent { image } => eprintln!("{} already present", safe(&image)),
        // The message is the registry's (or the mirror's) error: escaped.
        PullEvent::MirrorFailed { mirror, message } => eprintln!(
            "mirror {} failed ({}); trying the next source",
            safe(&mirror),
            safe(&message)
        ),
    }
}

fn json(e: &PullEvent) {
    let (kind, mut record) = match e {
        PullEvent::Pulling { image, from } => {
            ("pulling", serde_json::json!({"image": image, "from": from}))
        }
        PullEvent::Progress { .. } => return,
        PullEvent::Layer {
            digest,
            size,
            cached,
        } => (
            "layer",
            serde_json::json!({"digest": digest, "size": size, "cached": cached}),
        ),
        PullEvent::Pulled {
            image,
            digest,
            size,
            took,
        } => (
            "pulled",
            serde_json::json!({"image": image, "digest": digest, "size": size, "seconds": took.as_secs_f64()}),
        ),
        PullEvent::AlreadyPresent { image } => {
            ("alreadyPresent", serde_json::json!({"image": image}))
        }
        PullEvent::MirrorFailed { mirror, message } => (
            "mirrorFailed",
            serde_json::json!({"mirror": mirror, "message": message}),
        ),
    };
    record["event"] = serde_json::Value::from(kind);
    println!("{record}");
}

pub fn save(names: &[String], dir: &std::path::Path, output: Output) -> anyhow::Result<ExitCode> {
    let names = names
        .iter()
        .map(|n| ImageName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = crate::market::runtime()?;
    let saved = runtime
        .block_on(wpod::oci::layout::save(&names, dir))
        .with_context(|| format!("cannot save into {}", dir.display()))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&saved)?),
        Output::Text => {
            for s in &saved {
                println!(
                    "saved {}@{} ({} signatures)",
                    safe(&s.image),
                    safe(&s.digest),
                    s.signatures
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn load(
    dir: &std::path::Path,
    review: &crate::market::ReviewOptions,
) -> anyhow::Result<ExitCode> {
    let layout = wpod::oci::layout::Layout::open(dir)?;
    let runtime = crate::market::runtime()?;
    let store = Arc::new(store()?);
    let mut previous = std::collections::BTreeMap::new();
    for n in layout.names() {
        if let Ok(name) = ImageName::parse(&n) {
            previous.insert(name.canonical(), store.image(&name.canonical())?);
        }
    }
    let puller = Puller::new(store.clone())?;
    let progress = Progress::new(review.output);
    let report = |e: PullEvent| progress.show(e);
    let loaded = runtime
        .block_on(puller.load_layout(layout, &dir.display().to_string(), &report))
        .with_context(|| format!("cannot load {}", dir.display()))?;
    drop(progress);
    for (name, pulled) in loaded {
        if let Pulled::Sidecar(s) = pulled {
            let before = previous.remove(&name.canonical()).flatten();
            reviewed(&store, &name, before, &s, review)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(output: Output) -> anyhow::Result<ExitCode> {
    let images = store()?.images()?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&images)?),
        Output::Text => {
            use crate::table::{human_size, Align::*, Table};
            let mut table = Table::new(&[
                ("IMAGE", Left),
                ("KIND", Left),
                ("DIGEST", Left),
                ("SIZE", Right),
                ("LAST USED", Left),
            ]);
            for i in images {
                let kind = if i.sidecar.is_some() {
                    "sidecar"
                } else {
                    "image"
                };
                let used = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(i.last_used),
                );
                table.row([
                    i.name.clone(),
                    kind.to_string(),
                    i.digest.as_str()[..19].to_string(),
                    human_size(i.size),
                    used.to_string(),
                ]);
            }
            table.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(names: &[String], output: Output) -> anyhow::Result<ExitCode> {
    let store = store()?;
    let locked = store.lock()?;
    let mut missing = Vec::new();
    let mut untagged = Vec::new();
    for n in names {
        let canonical = ImageName::parse(n)
            .map(|i| i.canonical())
            .unwrap_or_else(|_| n.clone());
        match locked.forget(&canonical)? {
            Some(image) => untagged.push(image.name),
            None => missing.push(n.clone()),
        }
    }
    let report = locked.prune(&[])?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "untagged": untagged, "missing": missing, "blobs": report.blobs,
                "layers": report.layers, "bytes": report.bytes, "failed": report.failed,
            })
        ),
        Output::Text => {
            for name in &untagged {
                println!("untagged {}", safe(name));
            }
            println!(
                "removed {} blobs and {} layers ({})",
                report.blobs,
                report.layers,
                crate::table::human_size(report.bytes)
            );
        }
    }
    if !report.failed.is_empty() {
        for f in &report.failed {
            eprintln!("wpod: cannot remove {}", safe(f));
        }
        anyhow::bail!(
            "{} blobs or layers could not be removed",
            report.failed.len()
        );
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("no such image in the store: {}", missing.join(", "))
    }
}

pub fn prune() -> anyhow::Result<ExitCode> {
    let store = store()?;
    let report = store.lock()?.prune(&[])?;
    println!(
        "removed {} blobs and {} layers ({} bytes)",
        report.blobs, report.layers, report.bytes
    );
    if !report.failed.is_empty() {
        for f in &report.failed {
            eprintln!("wpod: cannot remove {}", safe(f));
        }
        anyhow::bail!(
            "{} blobs or layers could not be removed",
            report.failed.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
