//! Container images from OCI registries (in progress: see the container-images issue). So far:
//! where an image comes from (`registries`: podman's registries.conf), how its layers are
//! unpacked safely (`unpack`), and Kubernetes' rules for the process of a container from an
//! image (`process`). The registry client, the content store and the overlay root come next.

pub mod process;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod signature;
pub mod store;
pub mod unpack;
