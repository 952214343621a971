//! A TCP proxy the test controls, between the nodes and PostgreSQL: [`Proxy::cut`] closes
//! every open connection and refuses new ones (accepted and closed at once), as when the
//! database becomes unreachable; [`Proxy::restore`] forwards again.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Inner {
    upstream: SocketAddr,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sides of every forwarded connection (closed ones are pruned at each cut).
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy on `127.0.0.1`; everything is closed when it is dropped.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            upstream,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if i.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if i.cut.load(Ordering::Acquire) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&i.upstream, Duration::from_secs(2))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = i.open.lock().unwrap();
                    // Checked again under the lock: a cut that ran meanwhile closes nothing
                    // it does not see.
                    if i.cut.load(Ordering::Acquire) {
                        continue;
                    }
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, inner }
    }

    /// Where to connect instead of the database.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones until [`restore`](Proxy::restore).
    pub fn cut(&self) {
        let mut open = self.inner.open.lock().unwrap();
        self.inner.cut.store(true, Ordering::Release);
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.cut();
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Copies `from` to `to` on a thread of its own; when either ends, both are shut down.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
