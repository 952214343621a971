//! An endpoint's connections, as its state machine sees them: which are connecting, busy or
//! idle, and when each must be given up. The sockets themselves belong to the driver; the
//! endpoint keeps every deadline (connect, request, idle), so a connection that trickles,
//! hangs or never finishes its handshake is failed by time alone.

use std::time::Instant;

use crate::Error;

use super::{Action, ConnId, Endpoint};

/// One connection slot.
#[derive(Debug, Clone)]
pub(super) struct ConnSlot {
    /// TCP (and TLS) is up.
    pub connected: bool,
    /// A request is on it.
    pub busy: bool,
    /// Requests answered on it.
    pub served: u64,
    /// When it must be connected by.
    pub connect_until: Instant,
    /// When an idle keep-alive connection is let go.
    pub idle_until: Option<Instant>,
}

impl Endpoint {
    /// An idle connection, or a new slot (`true`: connect first). The caller makes it busy.
    pub(super) fn pick_conn(&mut self, now: Instant) -> (ConnId, bool) {
        if let Some(i) = self
            .conns
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.connected && !c.busy))
        {
            return (i, false);
        }
        let i = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.conns[i] = Some(ConnSlot {
            connected: false,
            busy: false,
            served: 0,
            connect_until: now
                .checked_add(self.p.timeouts.connect)
                .unwrap_or(now + crate::config::MAX_DURATION),
            idle_until: None,
        });
        (i, true)
    }

    /// Forgets connection `conn` and asks the driver to close it.
    pub(super) fn close_conn(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(conn)
            && slot.take().is_some()
        {
            self.actions.push_back(Action::Close { conn });
        }
    }

    /// Closes every connection.
    pub(super) fn close_all(&mut self) {
        for i in 0..self.conns.len() {
            self.close_conn(i);
        }
    }

    /// The earliest connection or request deadline.
    pub(super) fn conn_deadline(&self) -> Option<Instant> {
        let flights = self.flights.iter().map(|f| {
            let connecting = self.conns[f.conn]
                .as_ref()
                .filter(|c| !c.connected)
                .map(|c| c.connect_until);
            connecting.map_or(f.deadline, |c| c.min(f.deadline))
        });
        let idle = self.conns.iter().flatten().filter_map(|c| c.idle_until);
        flights.chain(idle).min()
    }

    /// Fails the requests past their deadline (or whose connection is not up by its connect
    /// deadline), and closes connections that idled too long.
    pub(super) fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.flights.len() {
            let f = &self.flights[i];
            let slot = self.conns[f.conn].as_ref();
            let connecting = slot.is_some_and(|c| !c.connected);
            let connect_over = connecting && slot.is_some_and(|c| now >= c.connect_until);
            if !(connect_over || now >= f.deadline) {
                i += 1;
                continue;
            }
            let timeouts = self.p.timeouts;
            let err = Error::Timeout {
                waiting_for: if connecting { "connect" } else { "response" },
                after: if connect_over && now < f.deadline {
                    timeouts.connect
                } else {
                    timeouts.request
                },
            };
            let conn = f.conn;
            self.handle_failure(conn, err, false, now);
            // `handle_failure` removed the flight at `i`: look at `i` again.
        }
        for i in 0..self.conns.len() {
            let idle_over = self.conns[i]
                .as_ref()
                .is_some_and(|c| !c.busy && c.idle_until.is_some_and(|t| now >= t));
            if idle_over {
                self.close_conn(i);
            }
        }
    }

    /// Connection `conn` is up (TCP connected and, for `https`, the handshake done).
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        let _ = now;
        if let Some(Some(c)) = self.conns.get_mut(conn) {
            c.connected = true;
        }
    }

    /// Connection `conn` closed (or broke) with no request on it: it is forgotten.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        if self.flights.iter().any(|f| f.conn == conn) {
            let e = Error::Io {
                kind: std::io::ErrorKind::ConnectionAborted,
                message: "the connection closed with a request on it".into(),
                source: None,
            };
            return self.handle_failure(conn, e, false, now);
        }
        self.close_conn(conn);
        self.gauges();
    }
}
