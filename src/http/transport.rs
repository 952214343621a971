//! The byte pipe under a [`Conn`](super::conn::Conn): a non-blocking mio `TcpStream`, with
//! TLS (`rustls::ClientConnection`) when the target is `https`.
//!
//! It knows nothing of HTTP. It connects (falling back through the target's addresses),
//! carries the TLS handshake along with whatever is written and read, and turns the socket's
//! and rustls' results into answers: data, end of stream, `WouldBlock`, or (TLS) "records
//! came but no plaintext yet, call again". A read call does a bounded amount of work; the
//! caller reads until `WouldBlock` (as an edge-triggered registration needs) or until its own
//! budget for the loop turn is spent.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;

use super::target::Target;
use crate::Error;

/// Builds an `Error::Io` saying what was being done.
pub(crate) fn io_error(e: &io::Error, what: &str) -> Error {
    Error::Io {
        kind: e.kind(),
        message: format!("{what}: {e}"),
        source: Error::io_source(e),
    }
}

/// What one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    /// This many plaintext bytes.
    Data(usize),
    /// The peer closed (TLS `close_notify`, or TCP end of stream).
    Eof,
    /// Nothing more for now.
    WouldBlock,
    /// TLS records worth about one buffer were read and gave no plaintext yet (handshake
    /// messages, alerts, empty records): call again. Keeps one call's work bounded.
    Again,
}

/// A registered, non-blocking TCP (+TLS) connection.
pub(crate) struct Transport {
    sock: TcpStream,
    token: Token,
    addrs: Vec<SocketAddr>,
    /// Whether non-public addresses may be connected to (else each is skipped).
    allow_private: bool,
    /// The index in `addrs` of the address being tried.
    addr: usize,
    tls: Option<ClientConnection>,
    connected: bool,
    /// Bytes read from the socket so far (TLS records included).
    received: u64,
}

impl Transport {
    /// Starts connecting to the first of `target`'s addresses that can start, and registers
    /// the socket for readable and writable events under `token`.
    pub fn open(target: &Target, registry: &Registry, token: Token) -> Result<Self, Error> {
        let tls = match (&target.tls, &target.server_name) {
            (Some(config), Some(name)) => Some(
                ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| Error::config("tls", format!("cannot start TLS: {e}")))?,
            ),
            _ => None,
        };
        let (sock, addr) = start_connect(&target.addrs, 0, target.allow_private, registry, token)?;
        Ok(Transport {
            sock,
            token,
            addrs: target.addrs.clone(),
            allow_private: target.allow_private,
            addr,
            tls,
            connected: false,
            received: 0,
        })
    }

    /// The address connected to (or being tried).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[self.addr]
    }

    /// Bytes read from the socket so far, TLS records included (for read budgets).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether TCP is connected. Handshaking may still be going on.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the TLS handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// After an event: whether the TCP connect has finished. When this address failed, the
    /// next one is tried (`Ok(false)`); when none is left, the last failure is the error.
    pub fn poll_connect(&mut self, registry: &Registry) -> Result<bool, Error> {
        if self.connected {
            return Ok(true);
        }
        let failure = match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => e,
            Ok(None) => match self.sock.peer_addr() {
                Ok(_) => {
                    // Requests are written whole; Nagle would only add latency.
                    let _ = self.sock.set_nodelay(true);
                    self.connected = true;
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) => e,
            },
        };
        let err = io_error(&failure, &format!("connect to {}", self.addr()));
        if self.addr + 1 >= self.addrs.len() {
            return Err(err);
        }
        let _ = registry.deregister(&mut self.sock);
        let (sock, addr) = start_connect(
            &self.addrs,
            self.addr + 1,
            self.allow_private,
            registry,
            self.token,
        )?;
        self.sock = sock;
        self.addr = addr;
        Ok(false)
    }

    /// Writes from `head` then `body` until both are sent or the socket would block, and
    /// pushes out TLS records (handshake included). Returns how many plaintext bytes were
    /// taken, and whether anything moved at all.
    pub fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(usize, bool), Error> {
        let mut taken = 0;
        let mut moved = false;
        loop {
            let h = taken.min(head.len());
            let pending = [IoSlice::new(&head[h..]), IoSlice::new(&body[taken - h..])];
            let n = match &mut self.tls {
                None => {
                    if pending.iter().all(|s| s.is_empty()) {
                        return Ok((taken, moved));
                    }
                    match self.sock.write_vectored(&pending) {
                        Ok(0) => return Err(io_error(&io::ErrorKind::WriteZero.into(), "send")),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok((taken, moved));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                        Err(e) => return Err(io_error(&e, "send")),
                    }
                }
                Some(tls) => {
                    // Plaintext into rustls (as much as its buffer takes), records out.
                    let n = tls
                        .writer()
                        .write_vectored(&pending)
                        .map_err(|e| io_error(&e, "TLS send"))?;
                    let sent = write_records(tls, &mut self.sock)?;
                    moved |= sent;
                    if n == 0 && (!sent || tls.wants_write()) {
                        return Ok((taken, moved));
                    }
                    n
                }
            };
            moved |= n > 0;
            taken += n;
        }
    }

    /// Reads plaintext into `buf`: from what rustls has decrypted, else from the socket.
    /// Reads at most about `buf.len()` bytes from the socket per call (`Got::Again` when
    /// those were all TLS records without plaintext).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Got, Error> {
        let Some(tls) = &mut self.tls else {
            return loop {
                match self.sock.read(buf) {
                    Ok(0) => break Ok(Got::Eof),
                    Ok(n) => {
                        self.received += n as u64;
                        break Ok(Got::Data(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(Got::WouldBlock),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(io_error(&e, "receive")),
                }
            };
        };
        let mut records = 0;
        loop {
            match tls.reader().read(buf) {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => return Ok(Got::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::Eof),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_error(&e, "TLS receive")),
            }
            if records >= buf.len() {
                // A peer sending records that never carry data must not hold the loop.
                return Ok(Got::Again);
            }
            match tls.read_tls(&mut self.sock) {
                Ok(n) => {
                    records += n;
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(&e, "receive")),
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the server why (best effort: the alert is queued), then give up.
                let _ = tls.write_tls(&mut self.sock);
                return Err(Error::Io {
                    kind: io::ErrorKind::InvalidData,
                    message: format!("TLS: {e}"),
                    source: None,
                });
            }
            // Handshake messages that processing queued go out now.
            write_records(tls, &mut self.sock)?;
        }
    }

    /// Deregisters and shuts the socket down, with a TLS `close_notify` when connected.
    pub fn close(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
        if let Some(tls) = &mut self.tls
            && self.connected
        {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// Writes queued TLS records until none is left or the socket would block. Returns whether
/// any went out.
fn write_records(tls: &mut ClientConnection, sock: &mut TcpStream) -> Result<bool, Error> {
    let mut sent = false;
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => break,
            Ok(_) => sent = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(&e, "send")),
        }
    }
    Ok(sent)
}

/// Starts connecting to the first address from index `from` on that can start (an address
/// can fail at once, an unreachable IPv6 one say), and registers the socket. Without
/// `allow_private`, a non-public address is skipped (the SSRF guard: this is the last step
/// before the socket exists, so whatever the resolver said, nothing else connects); if every
/// address is skipped the error is `PermissionDenied`, naming the address and its class.
fn start_connect(
    addrs: &[SocketAddr],
    from: usize,
    allow_private: bool,
    registry: &Registry,
    token: Token,
) -> Result<(TcpStream, usize), Error> {
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate().skip(from) {
        if !allow_private && let Some(class) = super::guard::non_public(addr.ip()) {
            last = Some(Error::Io {
                kind: io::ErrorKind::PermissionDenied,
                message: format!(
                    "refused to connect to {addr}: a {class} address, and allow_private is off"
                ),
                source: None,
            });
            continue;
        }
        match TcpStream::connect(*addr) {
            Ok(mut sock) => {
                registry
                    .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| io_error(&e, "register with the event loop"))?;
                return Ok((sock, i));
            }
            Err(e) => last = Some(io_error(&e, &format!("connect to {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| Error::Io {
        kind: io::ErrorKind::NotFound,
        message: "no address to connect to".into(),
        source: None,
    }))
}
