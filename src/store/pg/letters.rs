//! [`PgDeadLetters`]: the dead letters in `S.dead_letters`.

use parking_lot::Mutex;
use postgres::{Client, Row};

use super::{PgConfig, connect, location, quoted, storage_error, to_i64, to_u64};
use crate::store::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use crate::{Error, RawEvent};

/// Rows read at a time by `scan` and `take_each` (and so the most letters in one chunk).
const PAGE: i64 = 1000;

/// The dead letters of a [`PgStore`](super::PgStore), shared by every node of the schema,
/// on a connection of their own (opened at the first call, and again after a failure; one
/// call at a time uses it). The event is kept in the log's record encoding.
pub struct PgDeadLetters {
    config: PgConfig,
    at: String,
    conn: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDeadLetters")
            .field("at", &self.at)
            .field("cap", &self.config.dead_letter_bytes)
            .finish_non_exhaustive()
    }
}

impl PgDeadLetters {
    /// The dead letters of the store `config` names (connecting at the first call).
    pub fn new(config: PgConfig) -> PgDeadLetters {
        PgDeadLetters {
            at: location(&config),
            config,
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the connection (connecting first if needed); a database error drops the
    /// connection (rolling back what was open) and becomes [`Error::Storage`] for `op`.
    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let mut conn = self.conn.lock();
        if conn.is_none() {
            *conn = Some(connect(&self.config)?);
        }
        let client = conn.as_mut().expect("connected");
        f(client).map_err(|e| {
            *conn = None;
            storage_error(op, &self.at, e)
        })
    }

    fn size(client: &mut Client, schema: &str) -> Result<u64, postgres::Error> {
        let row = client.query_one(
            "SELECT pg_total_relation_size((quote_ident($1::text) || '.dead_letters')::regclass)",
            &[&schema],
        )?;
        Ok(to_u64(row.get(0)))
    }

    /// The page of rows after `after` (by id) that may match `filter` (endpoint and seqs are
    /// checked by the database; the rest by [`DeadLetterFilter::matches`]).
    fn page(
        &self,
        op: &'static str,
        after: i64,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<Row>, Error> {
        let s = quoted(&self.config.schema);
        let (lo, hi) = filter
            .seqs
            .map_or((i64::MIN, i64::MAX), |(a, b)| (to_i64(a), to_i64(b)));
        let endpoint = filter.endpoint.as_deref();
        self.with(op, |c| {
            c.query(
                &format!(
                    "SELECT id, endpoint, seq, published_ms, failed_ms, status, error, attempts, \
                     event FROM {s}.dead_letters \
                     WHERE id > $1 AND ($2::text IS NULL OR endpoint = $2) \
                       AND seq BETWEEN $3 AND $4 \
                     ORDER BY id LIMIT $5"
                ),
                &[&after, &endpoint, &lo, &hi, &PAGE],
            )
        })
    }
}

/// A row as a dead letter (`None`: its event cannot be decoded).
fn letter(row: &Row) -> Option<DeadLetter> {
    let event = RawEvent::decode_record(row.get(8)).ok()?;
    Some(DeadLetter {
        endpoint: row.get(1),
        seq: to_u64(row.get(2)),
        published_ms: to_u64(row.get(3)),
        failed_ms: to_u64(row.get(4)),
        status: row
            .get::<_, Option<i32>>(5)
            .and_then(|s| u16::try_from(s).ok()),
        error: row.get(6),
        attempts: u32::try_from(row.get::<_, i32>(7)).unwrap_or(0),
        event,
    })
}

impl DeadLetterStore for PgDeadLetters {
    /// One transaction for all of them. Refused with [`Error::DeadLettersFull`] when the
    /// table's size (`pg_total_relation_size`, which grows a page at a time) plus the
    /// letters' events would pass `PgConfig::dead_letter_bytes`.
    fn append(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut endpoints = Vec::with_capacity(letters.len());
        let mut seqs = Vec::with_capacity(letters.len());
        let mut published = Vec::with_capacity(letters.len());
        let mut failed = Vec::with_capacity(letters.len());
        let mut statuses = Vec::with_capacity(letters.len());
        let mut errors = Vec::with_capacity(letters.len());
        let mut attempts = Vec::with_capacity(letters.len());
        let mut events = Vec::with_capacity(letters.len());
        let mut needed = 0u64;
        for d in letters {
            let mut event = Vec::new();
            d.event.encode_record(&mut event);
            needed += (event.len() + d.error.len() + d.endpoint.len() + 64) as u64;
            endpoints.push(d.endpoint.as_str());
            seqs.push(to_i64(d.seq));
            published.push(to_i64(d.published_ms));
            failed.push(to_i64(d.failed_ms));
            statuses.push(d.status.map(i32::from));
            errors.push(d.error.as_str());
            attempts.push(i32::try_from(d.attempts).unwrap_or(i32::MAX));
            events.push(event);
        }
        let schema = self.config.schema.clone();
        let s = quoted(&schema);
        let cap = self.config.dead_letter_bytes;
        let used = self.with("append dead letters", |c| Self::size(c, &schema))?;
        if used.saturating_add(needed) > cap {
            return Err(Error::DeadLettersFull { cap, used, needed });
        }
        self.with("append dead letters", |c| {
            // One statement: all the rows, or none.
            c.execute(
                &format!(
                    "INSERT INTO {s}.dead_letters \
                     (endpoint, seq, published_ms, failed_ms, status, error, attempts, event) \
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                     $5::int[], $6::text[], $7::int[], $8::bytea[])"
                ),
                &[
                    &endpoints, &seqs, &published, &failed, &statuses, &errors, &attempts, &events,
                ],
            )
            .map(|_| ())
        })
    }

    /// Pages of 1000 rows by id, without a lock held while `f` runs. Counts rows whose event
    /// cannot be decoded as skipped.
    fn scan(
        &self,
        filter: &DeadLetterFilter,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let mut after = 0i64;
        let mut skipped = 0u64;
        loop {
            let rows = self.page("scan dead letters", after, filter)?;
            let Some(last) = rows.last() else {
                return Ok(skipped);
            };
            after = last.get(0);
            for row in &rows {
                match letter(row) {
                    Some(d) if filter.matches(&d) => f(d)?,
                    Some(_) => {}
                    None => skipped += 1,
                }
            }
        }
    }

    /// A page (1000 rows by id) at a time: the letters `select` picks are handed to `each` as
    /// one chunk and deleted (`DELETE ... WHERE id = ANY(...)`) once it returned `Ok`.
    /// Rows whose event cannot be decoded are left alone.
    fn take_each(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        each: &mut dyn FnMut(Vec<DeadLetter>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let s = quoted(&self.config.schema);
        let all = DeadLetterFilter::all();
        let mut after = 0i64;
        let mut taken = 0u64;
        loop {
            let rows = self.page("take dead letters", after, &all)?;
            let Some(last) = rows.last() else {
                return Ok(taken);
            };
            after = last.get(0);
            let mut ids = Vec::new();
            let mut chunk = Vec::new();
            for row in &rows {
                if let Some(d) = letter(row).filter(|d| select(d)) {
                    ids.push(row.get::<_, i64>(0));
                    chunk.push(d);
                }
            }
            if chunk.is_empty() {
                continue;
            }
            each(chunk)?;
            self.with("take dead letters", |c| {
                c.execute(
                    &format!("DELETE FROM {s}.dead_letters WHERE id = ANY($1)"),
                    &[&ids],
                )
            })?;
            taken += ids.len() as u64;
        }
    }

    /// The table's size (0 if the database cannot be asked).
    fn used_bytes(&self) -> u64 {
        let schema = self.config.schema.clone();
        self.with("dead letters size", |c| Self::size(c, &schema))
            .unwrap_or(0)
    }

    /// `PgConfig::dead_letter_bytes`.
    fn cap_bytes(&self) -> u64 {
        self.config.dead_letter_bytes
    }
}
