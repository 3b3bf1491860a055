//! Under `wpod run --audit`: which host interfaces each sidecar called, from the tracing spans
//! the bindings make for every host call (`wit-bindgen import`, with the interface and the
//! function), attributed to the sidecar whose task made them (its `wpod sidecar` span). Each
//! interface a sidecar uses is recorded once, as an audited `call` use (`grants::report`).
//!
//! Installed only by `--audit` (a TRACE-level layer filtered to those two span names); without
//! it the spans are disabled callsites and cost nothing.

use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::report::{Reporter, Use};

/// The name of the span each sidecar's task runs in.
pub const SIDECAR_SPAN: &str = "wpod sidecar";
/// The name of the bindings' span around each host call.
const IMPORT_SPAN: &str = "wit-bindgen import";

/// Where the layer reports, once the pod's reporter exists.
static AUDIT: OnceLock<Arc<Reporter>> = OnceLock::new();

/// Sends the calls the layer sees to `reporter` (the pod's; one per process).
pub fn report_to(reporter: Arc<Reporter>) {
    let _ = AUDIT.set(reporter);
}

/// The layer, with the filter that lets it see only its two spans.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    CallsLayer.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.name() == IMPORT_SPAN || m.name() == SIDECAR_SPAN
    }))
}

struct CallsLayer;

/// The container a sidecar span is for, kept in its extensions.
struct Container(String);

#[derive(Default)]
struct Fields {
    container: Option<String>,
    module: Option<String>,
    function: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "container" => self.container = Some(value.to_string()),
            "module" => self.module = Some(value.to_string()),
            "function" => self.function = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, format!("{value:?}").trim_matches('"'));
    }
}

impl<S> Layer<S> for CallsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if attrs.metadata().name() == SIDECAR_SPAN {
            if let (Some(span), Some(c)) = (ctx.span(id), fields.container) {
                span.extensions_mut().insert(Container(c));
            }
            return;
        }
        let (Some(reporter), Some(module), Some(function)) =
            (AUDIT.get(), fields.module, fields.function)
        else {
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        let container = span
            .scope()
            .skip(1)
            .find_map(|s| s.extensions().get::<Container>().map(|c| c.0.clone()));
        if let Some(container) = container {
            reporter.used(
                &container,
                Use {
                    class: "call".into(),
                    target: class(&module, &function),
                    via: None,
                },
            );
        }
    }
}

/// `wasi:filesystem/types` from the bindings' bare interface name (unambiguous among the
/// interfaces wpod links); filesystem calls that change something are their own class.
pub fn class(module: &str, function: &str) -> String {
    let package = match module {
        "types" | "preopens" => "wasi:filesystem",
        "tcp" | "tcp-create-socket" | "udp" | "udp-create-socket" | "network"
        | "instance-network" | "ip-name-lookup" => "wasi:sockets",
        "streams" | "poll" | "error" => "wasi:io",
        "environment" | "exit" | "stdin" | "stdout" | "stderr" | "terminal-input"
        | "terminal-output" | "terminal-stdin" | "terminal-stdout" | "terminal-stderr" => {
            "wasi:cli"
        }
        "monotonic-clock" | "wall-clock" => "wasi:clocks",
        "random" | "insecure" | "insecure-seed" => "wasi:random",
        "main-process" | "lifecycle" | "tls" => "wpod:sidecar",
        _ => "?",
    };
    let writes = module == "types"
        && [
            "write",
            "set-size",
            "set-times",
            "create-directory-at",
            "set-times-at",
            "link-at",
            "remove-directory-at",
            "rename-at",
            "symlink-at",
            "unlink-file-at",
            "write-via-stream",
            "append-via-stream",
        ]
        .iter()
        .any(|w| function.ends_with(w));
    match writes {
        true => format!("{package}/{module} (writes)"),
        false => format!("{package}/{module}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_named_in_full_and_writes_apart() {
        assert_eq!(
            class("tcp", "[method]tcp-socket.start-connect"),
            "wasi:sockets/tcp"
        );
        assert_eq!(
            class("types", "[method]descriptor.read"),
            "wasi:filesystem/types"
        );
        assert_eq!(
            class("types", "[method]descriptor.write-via-stream"),
            "wasi:filesystem/types (writes)"
        );
        assert_eq!(class("main-process", "info"), "wpod:sidecar/main-process");
    }
}
