//! Images and sidecars from OCI registries: where an image comes from (`registries`:
//! podman's registries.conf), how to talk to a registry (`client`), the trust policy and the
//! signatures it checks (`trust`, `signature`), the content store (`store`), pulling
//! (`pull`), what else is done on a registry (`remote`: push, sign, inspect, search), container images' layers (`unpack`, `process`), Wasm
//! sidecars as artifacts (`artifact`), the approvals of what they may do (`approvals`), and
//! OCI layout directories for air-gapped hosts (`layout`: `wpod save` / `wpod load`).
//!
//! A crate of its own, above `wpod-spec` and beside `wpod-grants`, so that the compiler keeps it
//! from reaching the plan, the sandbox or the pod's processes; `wpod` re-exports it as
//! `wpod::oci`.

pub mod approvals;
pub mod artifact;
pub mod client;
pub mod http;
pub mod layout;
pub mod process;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod remote;
pub mod signature;
pub mod store;
pub mod tar_stream;
pub mod trust;
pub mod unpack;

// The layers below, under the names the modules use (`crate::spec`, ...).
use wpod_spec::{component, error, files, spec};
