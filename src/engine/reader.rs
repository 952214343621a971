//! The log reader: durable endpoints' reads of the log, off the workers.
//!
//! A worker never opens, lists or reads a file. A durable endpoint that reads its backlog from
//! the log asks with [`Action::ReadLog`](super::endpoint::Action::ReadLog); its worker hands
//! the request here, and this thread (one per dispatcher with a store) reads, decodes the
//! records, and sends them back to the worker as a [`Command::LogRead`], waking it. Each
//! request looks at most [`SCAN_LIMIT`] records, matching or not, so an endpoint whose records
//! are sparse in a long log costs a bounded read per turn, and other endpoints' requests are
//! served in between.
//!
//! The thread holds its own [`StoreReader`] (its own file handles): no lock is held while it
//! reads. Creating the reader takes the store's lock once, which is off the workers too.
//!
//! The damaged ranges a read skipped ([`StoreReader::damaged`]) go back with the records, as
//! lost records from the request's `from` on, so the endpoint counts what it lost there
//! and goes on after it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::store::{StoreReader, unix_ms};
use crate::{Error, RawEvent};

use super::EndpointId;
use super::endpoint::{Held, LogRead};
use super::persist::Durable;
use super::wake::Wake;
use super::worker::Command;

/// Most records one request looks at.
pub(crate) const SCAN_LIMIT: u64 = 64 * 1024;

/// One read, and where its answer goes.
pub(crate) struct ReadRequest {
    /// The endpoint that asked.
    pub id: EndpointId,
    /// Its worker's commands, and how to wake it.
    pub reply: Sender<Command>,
    /// The worker's wake-up.
    pub wake: Arc<Wake>,
    /// From this sequence number...
    pub from: u64,
    /// ...to this one (committed).
    pub through: u64,
    /// The endpoint's slot bit.
    pub mask: u64,
    /// Most records to hand back.
    pub max: usize,
}

/// Starts the reader thread; it ends when every sender of its channel is gone.
pub(crate) fn spawn(durable: Arc<Durable>) -> Result<(Sender<ReadRequest>, JoinHandle<()>), Error> {
    let (tx, rx) = crossbeam_channel::unbounded::<ReadRequest>();
    let thread = std::thread::Builder::new()
        .name("hookwire-log-reader".into())
        .spawn(move || run(&durable, &rx))?;
    Ok((tx, thread))
}

fn run(durable: &Durable, requests: &Receiver<ReadRequest>) {
    let mut reader: Option<Box<dyn StoreReader>> = None;
    while let Ok(req) = requests.recv() {
        let read = read(durable, &mut reader, &req);
        if req
            .reply
            .send(Command::LogRead { id: req.id, read })
            .is_ok()
        {
            req.wake.wake();
        }
    }
}

/// Serves one request.
fn read(
    durable: &Durable,
    reader: &mut Option<Box<dyn StoreReader>>,
    req: &ReadRequest,
) -> LogRead {
    let r = match reader {
        Some(r) => r,
        None => match durable.store().and_then(|s| s.reader()) {
            Ok(r) => reader.insert(r),
            Err(e) => {
                return LogRead {
                    records: Vec::new(),
                    next: req.from,
                    error: Some(e),
                };
            }
        },
    };
    let until = req.through.min(req.from.saturating_add(SCAN_LIMIT - 1));
    let (now, now_ms) = (Instant::now(), unix_ms());
    let mut records = Vec::new();
    let result = r.read(req.from, until, req.mask, req.max, &mut |rec| {
        records.push(match RawEvent::decode_record(rec.payload) {
            Ok(event) => Ok(Held {
                event,
                at: now
                    .checked_sub(Duration::from_millis(now_ms.saturating_sub(rec.time_ms)))
                    .unwrap_or(now),
                seq: rec.seq,
            }),
            Err(error) => LogRead::undecodable(rec.seq, error),
        });
    });
    // Whether the read succeeded or not: what it skipped that this endpoint had not passed.
    for damage in r.damaged() {
        let lost = damage.lost_seqs();
        let first = lost.start.max(req.from);
        if first < lost.end {
            records.push(LogRead::lost(first, lost.end, damage));
        }
    }
    match result {
        Ok(next) => LogRead {
            records,
            next,
            error: None,
        },
        Err(e) => {
            // A failed reader may be stuck on a file that changed: open a new one next time.
            *reader = None;
            LogRead {
                records,
                next: req.from,
                error: Some(e),
            }
        }
    }
}
