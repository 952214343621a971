//! [`PgReader`]: reads committed events back, on a connection of its own.

use postgres::{Client, Statement};

use super::{PgConfig, connect, location, quoted, storage_error, to_i64, to_u64};
use crate::Error;
use crate::store::{Record, StoreReader};

/// Reads committed events of a [`PgStore`](super::PgStore), on its own connection (opened at
/// the first read, and again after a failure). Each read is one statement, so one snapshot:
/// it returns a gap-free prefix of what will ever be committed (seqs are given in commit
/// order), and never says it has passed a seq that is not committed yet.
pub struct PgReader {
    config: PgConfig,
    at: String,
    conn: Option<(Client, Statement)>,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader")
            .field("at", &self.at)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl PgReader {
    /// A reader of the store `config` names (it connects at its first read).
    pub fn new(config: PgConfig) -> PgReader {
        PgReader {
            at: location(&config),
            config,
            conn: None,
        }
    }

    fn connect(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            let mut client = connect(&self.config)?;
            let s = quoted(&self.config.schema);
            // The head (`m.next_seq`) comes from the same snapshot as the events, so the
            // read knows how far the log was committed when it looked.
            let stmt = client
                .prepare(&format!(
                    "SELECT m.next_seq, e.seq, e.mask, e.time_ms, e.payload \
                     FROM {s}.meta m LEFT JOIN LATERAL ( \
                         SELECT seq, mask, time_ms, payload FROM {s}.events \
                         WHERE seq BETWEEN $1 AND $2 AND (mask & $3) <> 0 \
                         ORDER BY seq LIMIT $4) e ON true \
                     WHERE m.id = 1 ORDER BY e.seq"
                ))
                .map_err(|e| storage_error("read", &self.at, e))?;
            self.conn = Some((client, stmt));
        }
        Ok(())
    }
}

impl StoreReader for PgReader {
    /// Returns one past the last record given when `max` were given; else one past `until`,
    /// or the head of the log if that is lower (seqs not committed yet are read next time,
    /// not skipped).
    fn read(
        &mut self,
        from: u64,
        until: u64,
        mask: u64,
        max: usize,
        f: &mut dyn FnMut(Record<'_>),
    ) -> Result<u64, Error> {
        if max == 0 || from > until {
            return Ok(from);
        }
        self.connect()?;
        let (client, stmt) = self.conn.as_mut().expect("connected");
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = match client.query(
            &*stmt,
            &[&to_i64(from), &to_i64(until), &(mask as i64), &limit],
        ) {
            Ok(rows) => rows,
            Err(e) => {
                self.conn = None;
                return Err(storage_error("read", &self.at, e));
            }
        };
        let mut given = 0usize;
        let mut last = None;
        let mut head = from;
        for row in &rows {
            head = to_u64(row.get(0));
            let Some(seq) = row.get::<_, Option<i64>>(1) else {
                continue;
            };
            let seq = to_u64(seq);
            f(Record {
                seq,
                mask: row.get::<_, i64>(2) as u64,
                time_ms: row.get::<_, i64>(3) as u64,
                payload: row.get(4),
            });
            given += 1;
            last = Some(seq);
        }
        Ok(match last {
            Some(last) if given >= max => last + 1,
            _ => until.saturating_add(1).min(head.max(from)),
        })
    }
}
