//! The worker's side of one webhook endpoint: it carries out the endpoint's actions (sockets
//! for `Send` and `Close`; the log reader, the persistence thread, the dead-letter hook and the
//! resolver for the rest) and tells the endpoint what came of them. Nothing here decides
//! anything; nothing here waits.

use std::time::Instant;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Error;
use crate::http::Body;
use crate::http::conn::{Conn, Progress};
use crate::store::DeadLetter;

use super::endpoint::{Action, LogRead, Signed};
use super::reader::ReadRequest;
use super::resolver::Lookup;
use super::shared::Shared;
use super::task::{DeadLetterHook, Http, Io};

impl Http {
    /// Carries out what the endpoint asked for, until it asks for nothing more.
    pub(super) fn drive(&mut self, shared: &Shared, io: &mut Io<'_>) {
        let h = self;
        while let Some(action) = h.ep.poll_action() {
            match action {
                Action::Send {
                    conn,
                    connect,
                    body,
                    signed,
                } => h.send(conn, connect, body, signed, io),
                Action::Close { conn } => {
                    if let Some(c) = h.conns.get_mut(conn).and_then(Option::take) {
                        c.close(io.registry);
                    }
                }
                Action::ReadLog {
                    from,
                    through,
                    mask,
                    max,
                } => {
                    let req = ReadRequest {
                        id: shared.id,
                        reply: io.reply.clone(),
                        wake: io.wake.clone(),
                        from,
                        through,
                        mask,
                        max,
                    };
                    let sent = io.services.reader.as_ref().map(|r| r.send(req));
                    if !matches!(sent, Some(Ok(()))) {
                        let read = LogRead {
                            records: Vec::new(),
                            next: from,
                            error: Some(Error::Closed),
                        };
                        h.ep.handle_log(read, io.now);
                    }
                }
                Action::DeadLetter(letters) => match (&io.services.durable, &h.hook) {
                    // Written before the cursor that passes them is saved.
                    (Some(d), _) if shared.is_durable() => d.dead_letter(letters),
                    (_, Some(hook)) => hand_to_hook(shared, hook, letters),
                    _ => {}
                },
                Action::Resolve => {
                    let target = h.ep.target();
                    let lookup = Lookup {
                        id: shared.id,
                        host: target.host.clone(),
                        port: target.port,
                        reply: io.reply.clone(),
                        wake: io.wake.clone(),
                    };
                    let sent = io.services.resolver.as_ref().map(|r| r.send(lookup));
                    if !matches!(sent, Some(Ok(()))) {
                        h.ep.handle_resolved(Err(Error::Closed), io.now);
                    }
                }
            }
        }
    }

    /// Starts a request on connection `conn`, opening it first if asked.
    pub(super) fn send(
        &mut self,
        conn: usize,
        connect: bool,
        body: Body,
        signed: Option<Signed>,
        io: &mut Io<'_>,
    ) {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, || None);
        }
        if connect {
            if let Some(old) = self.conns[conn].take() {
                old.close(io.registry);
            }
            // Tokens are `slot << 8 | connection`; max_in_flight (<= 64) keeps `conn` below 255.
            let token = mio::Token(io.slot << 8 | conn);
            match Conn::connect(self.ep.target(), io.registry, token) {
                Ok(c) => self.conns[conn] = Some(c),
                Err(e) => return self.ep.handle_failure(conn, e, false, io.now),
            }
        }
        let mut headers: Vec<(&str, &str)> = self.ep.headers().collect();
        if let Some(s) = &signed {
            headers.push((crate::http::WEBHOOK_ID, s.id.as_str()));
            headers.push((crate::http::WEBHOOK_TIMESTAMP, s.timestamp.as_str()));
            headers.push((crate::http::WEBHOOK_SIGNATURE, s.signature.as_str()));
        }
        let Some(c) = self.conns[conn].as_mut() else {
            let e = Error::Io {
                kind: std::io::ErrorKind::NotConnected,
                message: "the connection is gone".into(),
                source: None,
            };
            return self.ep.handle_failure(conn, e, false, io.now);
        };
        if let Err(e) = c.start(&headers, body) {
            return self.ep.handle_failure(conn, e, false, io.now);
        }
        // `start` does no I/O, and an edge-triggered socket that is already writable will not
        // say so again: drive it now.
        self.on_io(conn, io);
    }

    /// Drives connection `conn` (a socket event, a re-drive, or a request just started) and
    /// tells the endpoint what came of it.
    pub(super) fn on_io(&mut self, conn: usize, io: &mut Io<'_>) {
        let Some(Some(c)) = self.conns.get_mut(conn) else {
            return;
        };
        let was_up = c.is_established();
        let progress = c.on_event(io.registry);
        if !matches!(progress, Progress::Pending) {
            // The answer (or the failure) came during this drive, which may have begun well
            // after the loop turn's time: a request started and answered within one turn
            // would otherwise take no time at all. The round trip ends now.
            io.now = io.now.max(Instant::now());
        }
        if !was_up && c.is_established() {
            self.ep.handle_connected(conn, io.now);
        }
        match progress {
            Progress::Done(resp) => self.ep.handle_response(conn, resp, io.now),
            Progress::Failed(e) => {
                let stale = c.failed_stale();
                self.ep.handle_failure(conn, e, stale, io.now);
            }
            Progress::Pending => {
                if c.is_dead() {
                    self.ep.handle_closed(conn, io.now);
                }
            }
        }
    }
}

/// Hands dead letters to a memory endpoint's hook; refusals and panics are counted.
pub(super) fn hand_to_hook(shared: &Shared, hook: &DeadLetterHook, letters: Vec<DeadLetter>) {
    for letter in letters {
        let ok = catch_unwind(AssertUnwindSafe(|| hook.write(letter))).is_ok_and(|r| r.is_ok());
        if !ok {
            shared.dead_letter_errors.inc();
        }
    }
}

// A real dispatcher: not under loom, whose primitives only run inside a model.
