//! What the test kit's servers share: a listener on `127.0.0.1`, one thread per connection,
//! and a shutdown that never hangs.
//!
//! [`Receiver`](super::Receiver) (a webhook receiver with a fault plan) and
//! [`Hostile`](super::Hostile) (a server that misbehaves at the byte level) differ only in
//! what they do with a connection; accepting, keeping a handle to every open socket, and
//! stopping are here once.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;

use crate::policy::Wakeup;

#[derive(Default)]
struct Conns {
    closed: bool,
    next: u64,
    /// A handle to every open connection, so shutdown can end the hung or endless ones.
    open: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

/// A running loopback listener whose connections are each served on a thread of their own.
pub(super) struct Server {
    addr: SocketAddr,
    stop: Arc<Wakeup>,
    conns: Arc<Mutex<Conns>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves every connection with `serve`, on a thread named
    /// `conn_thread` (the acceptor's is `name`). `stop` is set by [`shutdown`](Server::shutdown),
    /// so handlers can cut their waits short on it.
    pub(super) fn start(
        name: &str,
        conn_thread: &'static str,
        stop: Arc<Wakeup>,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Mutex::new(Conns::default()));
        let (c, s) = (conns.clone(), stop.clone());
        let serve = Arc::new(serve);
        let acceptor = thread::Builder::new()
            .name(name.into())
            .spawn(move || accept_loop(&listener, &c, &s, conn_thread, serve))?;
        Ok(Server {
            addr,
            stop,
            conns,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// The address it listens on.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, shuts every open connection down (which ends blocked reads and
    /// writes), sets `stop`, and joins the threads. Idempotent.
    pub(super) fn shutdown(&self) {
        let threads = {
            let mut conns = self.conns.lock();
            conns.closed = true;
            for stream in conns.open.values() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut conns.threads)
        };
        self.stop.set();
        if let Some(acceptor) = self.acceptor.lock().take() {
            // `accept` has no timeout: a connection of our own wakes it to see `closed`. If
            // even that fails the thread is left to end with the process, never waited on.
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                let _ = acceptor.join();
            }
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    conns: &Arc<Mutex<Conns>>,
    stop: &Wakeup,
    conn_thread: &'static str,
    serve: Arc<dyn Fn(TcpStream) + Send + Sync>,
) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: back off briefly instead of spinning.
                log::debug!("test server: accept failed: {e}");
                if stop.wait_for(Duration::from_millis(10)) {
                    return;
                }
                continue;
            }
        };
        let mut open = conns.lock();
        if open.closed {
            return;
        }
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let id = open.next;
        open.next += 1;
        open.open.insert(id, handle);
        open.threads.retain(|t| !t.is_finished());
        let (c, serve) = (conns.clone(), serve.clone());
        let spawned = thread::Builder::new()
            .name(conn_thread.into())
            .spawn(move || {
                serve(stream);
                c.lock().open.remove(&id);
            });
        match spawned {
            Ok(t) => open.threads.push(t),
            Err(_) => {
                if let Some(s) = open.open.remove(&id) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}
