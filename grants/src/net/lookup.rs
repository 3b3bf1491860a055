//! `wasi:sockets/ip-name-lookup`, wpod's own: a sidecar may look up only the names its
//! outbound rules allow, and the answers come from the pod's hostAliases and resolvers (see
//! `dns.rs`), never from wpod's host files. An answer binds its addresses to the rules that
//! allowed the name, so that a later connect to them is allowed on those rules' ports.
//!
//! wasmtime-wasi's resolver cannot be used or wrapped (its stream type is private to it, and it
//! asks the C library, which reads wpod's /etc/hosts and resolv.conf): this interface is
//! linked in its place, with wasmtime-wasi's `network` resource and error codes.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;

use tokio::task::JoinHandle;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi_io::poll::{subscribe, DynPollable, Pollable};

use super::{NetState, Policy};

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "package wpod:host; world lookup { import wasi:sockets/ip-name-lookup@0.2.12; }",
        world: "wpod:host/lookup",
        imports: { default: tracing | trappable },
        require_store_data_send: true,
        with: {
            "wasi:io/poll": wasmtime_wasi_io::bindings::wasi::io::poll,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/ip-name-lookup.resolve-address-stream": super::ResolveStream,
        },
        trappable_error_type: {
            "wasi:sockets/network.error-code" => wasmtime_wasi::p2::SocketError,
        },
    });
}

use bindings::wasi::sockets::ip_name_lookup::{self, HostResolveAddressStream};

/// A lookup under way, or its answer.
pub enum ResolveStream {
    Pending(JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl Drop for ResolveStream {
    fn drop(&mut self) {
        // A guest that stops waiting stops the lookup.
        if let ResolveStream::Pending(task) = self {
            task.abort();
        }
    }
}

impl ResolveStream {
    fn poll_done(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if let ResolveStream::Pending(task) = self {
            let Poll::Ready(joined) = std::pin::Pin::new(task).poll(cx) else {
                return Poll::Pending;
            };
            let result = joined.unwrap_or(Err(ErrorCode::PermanentResolverFailure));
            *self = ResolveStream::Done(result.map(Vec::into_iter));
        }
        Poll::Ready(())
    }
}

use std::future::Future;

#[wasmtime_wasi_io::async_trait]
impl Pollable for ResolveStream {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_done(cx)).await
    }
}

/// The store's view for this interface: the network capability's state and the table.
pub struct LookupView<'a> {
    pub state: &'a mut NetState,
    pub table: &'a mut ResourceTable,
}

pub struct HasLookup;

impl HasData for HasLookup {
    type Data<'a> = LookupView<'a>;
}

impl ip_name_lookup::Host for LookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveStream>, SocketError> {
        // The network resource is the capability to call this; it must be one.
        let _ = self.table.get(&network)?;
        let policy: Arc<Policy> = self.state.policy.clone();
        let stream = match policy.lookup(&name) {
            Ok(super::LookupPlan::Answer(ips)) => ResolveStream::Done(Ok(ips.into_iter())),
            Ok(super::LookupPlan::Resolve(candidates)) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err(ErrorCode::PermanentResolverFailure.into());
                };
                let permits = self.state.lookups.clone();
                ResolveStream::Pending(runtime.spawn(async move {
                    // Bounded per instance: more lookups wait their turn.
                    let _permit = permits.acquire_owned().await;
                    policy.resolve(candidates).await
                }))
            }
            Err(code) => return Err(code.into()),
        };
        Ok(self.table.push(stream)?)
    }
}

/// The error conversion the interface's functions need (the rest of `wasi:sockets/network` is
/// wasmtime-wasi's, linked by the network capability).
impl wasmtime_wasi::p2::bindings::sockets::network::Host for LookupView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        _err: Resource<wasmtime_wasi_io::streams::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for LookupView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostResolveAddressStream for LookupView<'_> {
    fn resolve_next_address(
        &mut self,
        resource: Resource<ResolveStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let stream = self.table.get_mut(&resource)?;
        let waker = std::task::Waker::noop();
        if stream
            .poll_done(&mut std::task::Context::from_waker(waker))
            .is_pending()
        {
            return Err(ErrorCode::WouldBlock.into());
        }
        match stream {
            ResolveStream::Done(Ok(ips)) => Ok(ips.next().map(IpAddress::from)),
            ResolveStream::Done(Err(code)) => Err((*code).into()),
            ResolveStream::Pending(_) => Err(ErrorCode::WouldBlock.into()),
        }
    }

    fn subscribe(
        &mut self,
        resource: Resource<ResolveStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, resource)
    }

    fn drop(&mut self, resource: Resource<ResolveStream>) -> wasmtime::Result<()> {
        self.table.delete(resource)?;
        Ok(())
    }
}

/// Links this interface in wasmtime-wasi's place.
pub fn add_to_linker<T: super::super::GrantHost>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    fn view<T: super::super::GrantHost>(t: &mut T) -> LookupView<'_> {
        let (states, table) = t.grant_states();
        LookupView {
            state: &mut states.net,
            table,
        }
    }
    ip_name_lookup::add_to_linker::<T, HasLookup>(linker, view)
}
