//! Past one host: the same Pod and the same Wasm sidecars on Kubernetes (issue 28).
//!
//! Kubernetes picks one runtime per pod, so a Wasm sidecar becomes an ordinary container whose
//! process is wpod hosting that one component inside the real pod: `wpod sidecar run`
//! ([`sidecar`]). Its grants are planned from the Pod manifest by the code `wpod run` uses
//! (`plan::in_container`); what its pod gives it (the network namespace, the volumes mounted at
//! their mountPaths) is found in the container ([`context`]), and so are the main containers'
//! processes when the pod shares its PID namespace ([`main_view`]). `wpod kube generate`
//! ([`generate`]) writes the pod as plain Kubernetes YAML with a runner container per sidecar.
//!
//! Above the supervisor (it reports with the supervisor's events) and below the CLI.

pub mod build;
pub mod context;
pub mod generate;
pub mod main_view;
pub mod sidecar;
pub mod yaml;
