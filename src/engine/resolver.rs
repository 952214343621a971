//! Name resolution, off the workers.
//!
//! Resolving a host is blocking (`getaddrinfo`), so no worker does it. An endpoint whose
//! connections fail asks for its host to be resolved again (at most every
//! [`RESOLVE_EVERY`](super::endpoint::RESOLVE_EVERY)) with
//! [`Action::Resolve`](super::endpoint::Action::Resolve); its worker hands the request to this
//! thread (one per dispatcher, started with it), which answers with a [`Command::Resolved`].
//! One slow lookup delays the ones behind it, never a worker. The thread is not joined at
//! shutdown (a lookup can take longer than any deadline): it ends after its current lookup,
//! once its channel is closed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::Error;

use super::EndpointId;
use super::wake::Wake;
use super::worker::Command;

/// One lookup, and where its answer goes.
pub(crate) struct Lookup {
    /// The endpoint that asked.
    pub id: EndpointId,
    /// The host (a name; IP addresses are never looked up) and port.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Its worker's commands.
    pub reply: Sender<Command>,
    /// The worker's wake-up.
    pub wake: Arc<Wake>,
}

/// Starts the resolver thread.
pub(crate) fn spawn() -> Result<Sender<Lookup>, Error> {
    let (tx, rx) = crossbeam_channel::unbounded::<Lookup>();
    std::thread::Builder::new()
        .name("hookwire-resolver".into())
        .spawn(move || {
            while let Ok(l) = rx.recv() {
                let result = resolve(&l.host, l.port);
                if l.reply.send(Command::Resolved { id: l.id, result }).is_ok() {
                    l.wake.wake();
                }
            }
        })?;
    Ok(tx)
}

/// The addresses of `host:port`, or a typed error.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Io {
            kind: e.kind(),
            message: format!("cannot resolve {host}: {e}"),
            source: crate::Error::io_source(&e),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Io {
            kind: std::io::ErrorKind::NotFound,
            message: format!("{host} resolved to no address"),
            source: None,
        });
    }
    Ok(addrs)
}
