//! Sending a batch, and what its answer means: delivered, retried (at the front, so order
//! holds), given up (dead letters), or the endpoint disabled.

use std::time::Instant;

use crate::Error;
use crate::http::conn::Response;
use crate::policy::{Attempt, Pushback, Verdict, parse_retry_after};
use crate::store::DeadLetter;

use super::batch::Batch;
use super::{Action, ConnId, Endpoint, Flight, Signed, warn};

impl Endpoint {
    /// Sends `batch` on an idle connection, or a new one.
    pub(super) fn send(&mut self, mut batch: Batch, now: Instant) {
        let attempt = match batch.attempt {
            None => Attempt::first(now),
            Some(a) => a.next(),
        };
        batch.attempt = Some(attempt);
        if attempt.number > 1 {
            self.shared.retries.inc();
        }
        let signed = match &self.p.signer {
            None => None,
            Some(signer) => {
                if batch.msg_id.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
                    let e = Error::Encode {
                        message: format!(
                            "event id {:?} cannot be sent as a webhook-id header",
                            batch.msg_id
                        ),
                    };
                    return self.failed(batch, e, now);
                }
                let secs = self
                    .wall(now)
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Some(Signed {
                    id: batch.msg_id.clone(),
                    timestamp: secs.to_string(),
                    signature: signer.sign(&batch.msg_id, secs, &batch.body),
                })
            }
        };
        let (conn, connect) = self.pick_conn(now);
        if let Some(Some(c)) = self.conns.get_mut(conn) {
            c.busy = true;
            c.idle_until = None;
        }
        let body = batch.body.clone();
        let deadline = now
            .checked_add(self.p.timeouts.request)
            .unwrap_or(now + crate::config::MAX_DURATION);
        self.flights.push(Flight {
            batch,
            conn,
            started: now,
            deadline,
        });
        self.actions.push_back(Action::Send {
            conn,
            connect,
            body,
            signed,
        });
    }

    /// The request on connection `conn` got its whole answer.
    pub fn handle_response(&mut self, conn: ConnId, resp: Response, now: Instant) {
        let Some(at) = self.flights.iter().position(|f| f.conn == conn) else {
            return;
        };
        let Flight { batch, started, .. } = self.flights.swap_remove(at);
        if let Some(a) = &mut self.p.adaptive {
            let pushback = if matches!(resp.status, 429 | 503) {
                Pushback::Yes
            } else {
                Pushback::None
            };
            a.on_result(now.saturating_duration_since(started), pushback, now);
        }
        self.shared.statuses.record(resp.status);
        self.shared
            .rtt
            .record(now.saturating_duration_since(started));
        match self.conns.get_mut(conn).and_then(Option::as_mut) {
            Some(c) if resp.keep_alive => {
                // An answer came, so it is up (whatever the driver said or not).
                c.connected = true;
                c.busy = false;
                c.served += 1;
                c.idle_until = now.checked_add(self.p.timeouts.idle);
            }
            _ => self.close_conn(conn),
        }
        if (200..300).contains(&resp.status) {
            self.shared.successes.inc();
            self.p.strategy.success(&(), now);
            self.shared.set_breaker(self.p.strategy.breaker());
            self.shared
                .lag
                .record_all(batch.ats.iter().map(|t| now.saturating_duration_since(*t)));
            self.shared.delivered.add(batch.len());
        } else {
            self.shared.failures.inc();
            let retry_after = resp
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, self.wall(now)));
            let e = Error::Status {
                code: resp.status,
                retry_after,
            };
            // A redirect is not followed: where it points is what a person needs to know.
            let detail = resp
                .location
                .map(|to| format!("{e} to {to} (redirects are not followed: use the new URL)"));
            self.failed(batch, e, now);
            if let Some(d) = detail {
                *self.shared.last_error.lock() = Some(d);
            }
        }
        self.gauges();
    }

    /// The request on connection `conn` failed with `err` (the connection is gone). `stale`:
    /// it failed before any answer byte on a keep-alive connection that had served a request,
    /// so the server had closed it unnoticed and never saw this one.
    pub fn handle_failure(&mut self, conn: ConnId, err: Error, stale: bool, now: Instant) {
        self.close_conn(conn);
        let Some(at) = self.flights.iter().position(|f| f.conn == conn) else {
            return;
        };
        let Flight {
            mut batch, started, ..
        } = self.flights.swap_remove(at);
        if let Some(a) = &mut self.p.adaptive
            && matches!(err, Error::Timeout { .. })
        {
            a.on_result(now.saturating_duration_since(started), Pushback::Yes, now);
        }
        self.shared.errors.inc();
        self.maybe_resolve(&err, now);
        if stale && !batch.stale_retried {
            // Resend once, on a fresh connection, as the same attempt.
            batch.stale_retried = true;
            // If it was the breaker's probe, the resend must be allowed to be one.
            self.p.strategy.abandon(now);
            self.shared.set_breaker(self.p.strategy.breaker());
            batch.attempt = batch.attempt.map(|a| Attempt {
                number: a.number.saturating_sub(1),
                ..a
            });
            self.ready.push_front(batch);
        } else {
            self.failed(batch, err, now);
        }
        self.gauges();
    }

    /// An attempt failed with `err`: retry (at the front, keeping order), give up, or disable.
    fn failed(&mut self, batch: Batch, err: Error, now: Instant) {
        self.shared.set_last_error(&err);
        let attempt = batch.attempt.unwrap_or_else(|| Attempt::first(now));
        let verdict = self.p.strategy.failure(&(), &attempt, &err, now);
        self.shared.set_breaker(self.p.strategy.breaker());
        match verdict {
            Verdict::Retry => self.ready.push_front(batch),
            Verdict::GiveUp(reason) => {
                if let Some(held) = self.warn_give_up.check(now) {
                    log::warn!(
                        "{}: gave up on {} event(s) ({}): {reason}; last error: {err}{}",
                        self.shared.name,
                        batch.len(),
                        batch.msg_id,
                        warn::more(held)
                    );
                }
                let n = batch.len();
                if self.keep_events {
                    let letters = self.dead_letters(batch, &err, attempt.number, now);
                    self.actions.push_back(Action::DeadLetter(letters));
                }
                self.shared.dead_lettered.add(n);
            }
            Verdict::Disable(reason) => {
                // The batch is kept (first in line) and goes out when the endpoint is enabled.
                self.ready.push_front(batch);
                log::warn!("{}: disabled: {reason}", self.shared.name);
                self.disabled = true;
                // Health says "disabled" itself: keep only why, and since when.
                let why = match &reason {
                    crate::policy::GiveUpReason::Disabled { reason } => reason.clone(),
                    other => other.to_string(),
                };
                let since = httpdate::fmt_http_date(self.wall(now));
                self.shared
                    .set_disabled(Some(format!("{why} (since {since})")));
            }
        }
    }

    /// A given-up batch, as dead letters (memory events have sequence number 0).
    fn dead_letters(
        &self,
        batch: Batch,
        err: &Error,
        attempts: u32,
        now: Instant,
    ) -> Vec<DeadLetter> {
        let now_ms = self.unix_ms(now);
        let status = match err {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        };
        let error = err.to_string();
        let seqs = batch.seqs.into_iter().chain(std::iter::repeat(0));
        batch
            .events
            .into_iter()
            .zip(seqs)
            .zip(batch.ats)
            .map(|((event, seq), at)| DeadLetter {
                endpoint: self.shared.name.clone(),
                seq,
                published_ms: now_ms
                    .saturating_sub(now.saturating_duration_since(at).as_millis() as u64),
                failed_ms: now_ms,
                status,
                error: error.clone(),
                attempts,
                event,
            })
            .collect()
    }
}
