//! [`PgStore`]: the [`Store`] in PostgreSQL.

use std::sync::Arc;

use postgres::{Client, SimpleQueryMessage, Statement};

use super::letters::PgDeadLetters;
use super::reader::PgReader;
use super::schema::{self, Partition};
use super::{Fence, PgConfig, connect, location, quoted, storage_error, to_i64, to_u64};
use crate::Error;
use crate::store::{DeadLetterStore, EndpointState, Recovery, SLOTS, Store, StoreReader};

/// Rows per `INSERT ... SELECT FROM UNNEST(...)` statement (a larger group takes several).
const INSERT_ROWS: usize = 1000;

/// The [`Store`] in PostgreSQL: one log shared by every node that opens the same schema.
///
/// # Commit order
///
/// The first [`append`](Store::append) of a group opens a transaction and locks the head row
/// (`SELECT next_seq FROM S.meta WHERE id = 1 FOR UPDATE`); appends number their records from
/// there, in memory; [`commit`](Store::commit) inserts them (`INSERT ... SELECT FROM UNNEST`,
/// up to 1000 rows a statement), moves the head, notifies `hookwire_<schema>` with the highest
/// seq, and commits, which releases the lock. So every node's commits are serialized by that
/// row lock, sequence numbers are handed out in commit order with no gap, and a reader that
/// sees `seq` has every lower one it will ever see. The lock is held from a group's first
/// append to its commit: the engine appends a group in a tight loop, then commits.
///
/// # Failures
///
/// Any database error in `append` or `commit` (a lost connection included) drops the
/// connection, which rolls the transaction back, forgets the group and returns
/// [`Error::Storage`]; the next call connects again (within `connect_timeout`), so
/// [`retries_failures`](Store::retries_failures) is `true`. A commit whose connection is lost
/// after `COMMIT` was sent is ambiguous: it may have committed. It is reported as failed and
/// the publisher retries, so the events may be in the log twice (at least once, never lost).
///
/// # Partitions and what is kept
///
/// The events table is partitioned by ranges of `partition_events` seqs, and one partition
/// beyond the one being written always exists (a commit creates the next one, under the head
/// lock, when it writes into the last). [`save_cursors`](Store::save_cursors) drops whole
/// partitions every endpoint has passed (one node at a time, under an advisory lock). There
/// is no quota of its own: the database's disk is the quota
/// ([`quota_bytes`](Store::quota_bytes) is `u64::MAX`).
pub struct PgStore {
    config: PgConfig,
    /// Where errors say they happened (no password).
    at: String,
    fence: Option<Arc<Fence>>,
    /// `None` after a failure: the next call connects again.
    conn: Option<Conn>,
    /// A group is open: its transaction holds the head row's lock.
    in_group: bool,
    group: Group,
    /// The head as this store last saw it (the next append's seq while a group is open).
    next_seq: u64,
    /// The head when the open group began (where `next_seq` goes back to if it fails).
    group_start: u64,
    durable: u64,
    first_seq: u64,
    used: u64,
    /// Where the last partition ends, as last seen (`None`: look it up).
    partition_end: Option<i64>,
    endpoints: Vec<(String, EndpointState)>,
    dead_letters: Arc<PgDeadLetters>,
    recovery: Recovery,
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    insert: Statement,
}

/// The records of the open group, columns apart (as the insert binds them).
#[derive(Default)]
struct Group {
    seqs: Vec<i64>,
    masks: Vec<i64>,
    times: Vec<i64>,
    /// Every payload, one after the other; `ends[i]` is where the i-th ends.
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Group {
    fn clear(&mut self) {
        self.seqs.clear();
        self.masks.clear();
        self.times.clear();
        self.bytes.clear();
        self.ends.clear();
    }

    fn payloads(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let p = &self.bytes[start..end];
                start = end;
                p
            })
            .collect()
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.at)
            .field("next_seq", &self.next_seq)
            .field("durable", &self.durable)
            .field("first_seq", &self.first_seq)
            .field("connected", &self.conn.is_some())
            .field("in_group", &self.in_group)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Opens the store in `config.schema`, creating or migrating its tables
    /// ([`migrate`](super::migrate)). With a `fence`, cursors are saved only for endpoints
    /// whose lease this node holds (see [`Fence`]); without one, this node saves every
    /// cursor (one node, or nodes that share out endpoints by other means).
    ///
    /// Fails with [`Error::Config`] if `config` is not valid or the tables are newer than
    /// this build; with [`Error::Storage`] if the database cannot be reached (within
    /// `connect_timeout`) or fails.
    pub fn open(config: &PgConfig, fence: Option<Arc<Fence>>) -> Result<PgStore, Error> {
        config.validate()?;
        let at = location(config);
        let mut client = connect(config)?;
        super::migrate(&mut client, config)?;
        let mut store = PgStore {
            config: config.clone(),
            at,
            fence,
            conn: None,
            in_group: false,
            group: Group::default(),
            next_seq: 1,
            group_start: 1,
            durable: 0,
            first_seq: 1,
            used: 0,
            partition_end: None,
            endpoints: Vec::new(),
            dead_letters: Arc::new(PgDeadLetters::new(config.clone())),
            recovery: Recovery::default(),
        };
        store.conn =
            Some(Conn::prepare(client, &config.schema).map_err(|e| store.fail("open", e))?);
        let s = quoted(&config.schema);
        let r = (|| -> Result<_, postgres::Error> {
            let client = store.client();
            let row = client.query_one(
                &format!("SELECT next_seq, first_seq FROM {s}.meta WHERE id = 1"),
                &[],
            )?;
            let parts = schema::partitions(client, &config.schema)?;
            let used = schema::events_bytes(client, &config.schema)?;
            let endpoints = load_endpoints(client, &config.schema)?;
            Ok((
                to_u64(row.get(0)),
                to_u64(row.get(1)),
                parts,
                used,
                endpoints,
            ))
        })();
        let (next, first, parts, used, endpoints) = r.map_err(|e| store.fail("open", e))?;
        store.next_seq = next;
        store.group_start = next;
        store.durable = next - 1;
        store.first_seq = first;
        store.used = used;
        store.partition_end = parts.last().map(|p| p.end);
        store.endpoints = endpoints;
        store.recovery = Recovery {
            segments: parts.len(),
            records: next - first,
            first_seq: first,
            next_seq: next,
            ..Recovery::default()
        };
        Ok(store)
    }

    /// The open connection (the caller checked there is one).
    fn client(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("connected").client
    }

    /// Connects if the last call failed.
    fn ensure_conn(&mut self, op: &'static str) -> Result<(), Error> {
        if self.conn.is_none() {
            let client = connect(&self.config)?;
            let conn = Conn::prepare(client, &self.config.schema)
                .map_err(|e| storage_error(op, &self.at, e))?;
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// After a database error: drops the connection (the server rolls back what was open),
    /// forgets the group, and returns the error.
    fn fail(&mut self, op: &'static str, e: postgres::Error) -> Error {
        self.conn = None;
        self.in_group = false;
        self.group.clear();
        self.next_seq = self.group_start;
        self.partition_end = None;
        storage_error(op, &self.at, e)
    }

    /// Commits the open group, if there is one (before anything else uses the connection,
    /// which would otherwise run inside the group's transaction).
    fn finish_group(&mut self) -> Result<(), Error> {
        if self.in_group {
            self.commit()?;
        }
        Ok(())
    }

    /// Opens a group: `BEGIN` and the head row's lock, in one round trip.
    fn begin_group(&mut self) -> Result<(), Error> {
        self.ensure_conn("append")?;
        let sql = format!(
            "BEGIN; SELECT next_seq FROM {}.meta WHERE id = 1 FOR UPDATE",
            quoted(&self.config.schema)
        );
        let r = self.client().simple_query(&sql);
        let msgs = r.map_err(|e| self.fail("append", e))?;
        let next = msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse::<u64>().ok()),
            _ => None,
        });
        let Some(next) = next else {
            self.conn = None;
            return Err(storage_error("append", &self.at, "the meta row is missing"));
        };
        self.in_group = true;
        self.next_seq = next;
        self.group_start = next;
        Ok(())
    }

    /// Inserts the group and commits it; returns the new partition end, if one was created.
    fn write_group(&mut self, through: u64) -> Result<Option<i64>, postgres::Error> {
        let schema = self.config.schema.clone();
        let per = self.config.partition_events;
        let want = to_i64(through).saturating_add(to_i64(per));
        let mut new_end = None;
        let conn = self.conn.as_mut().expect("connected");
        if self.partition_end.is_none_or(|end| end <= want) {
            // Look again under the head lock (another node may have created it), then create
            // what is missing: no other node creates partitions while we hold the lock.
            let parts = schema::partitions(&mut conn.client, &schema)?;
            let mut end = parts.last().map_or(
                self.group.seqs.first().copied().unwrap_or(1),
                |p: &Partition| p.end,
            );
            while end <= want {
                schema::create_partition(&mut conn.client, &schema, end, per)?;
                end = end.saturating_add(to_i64(per));
            }
            new_end = Some(end);
        }
        let payloads = self.group.payloads();
        let g = &self.group;
        let mut i = 0;
        while i < g.seqs.len() {
            let j = (i + INSERT_ROWS).min(g.seqs.len());
            conn.client.execute(
                &conn.insert,
                &[
                    &&g.seqs[i..j],
                    &&g.masks[i..j],
                    &&g.times[i..j],
                    &&payloads[i..j],
                ],
            )?;
            i = j;
        }
        let next = to_i64(through + 1);
        conn.client.batch_execute(&format!(
            "UPDATE {s}.meta SET next_seq = {next} WHERE id = 1; \
             SELECT pg_notify('hookwire_{schema}', '{through}'); COMMIT",
            s = quoted(&schema)
        ))?;
        Ok(new_end)
    }

    /// Saves cursors in one transaction (see [`Store::save_cursors`]).
    fn write_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), postgres::Error> {
        let schema = self.config.schema.clone();
        let s = quoted(&schema);
        let fence = self.fence.clone();
        let client = self.client();
        let mut tx = client.transaction()?;
        let names: std::collections::HashMap<u8, String> = load_endpoints(&mut tx, &schema)?
            .into_iter()
            .map(|(name, st)| (st.slot, name))
            .collect();
        let head = format!("(SELECT next_seq FROM {s}.meta WHERE id = 1)");
        match &fence {
            None => {
                let (slots, acks): (Vec<i16>, Vec<i64>) = acked
                    .iter()
                    .filter(|(slot, _)| names.contains_key(slot))
                    .map(|&(slot, a)| (i16::from(slot), to_i64(a)))
                    .unzip();
                if !slots.is_empty() {
                    tx.execute(
                        &format!(
                            "UPDATE {s}.endpoints e SET acked = greatest(e.acked, least(u.acked, {head})) \
                             FROM UNNEST($1::smallint[], $2::bigint[]) AS u(slot, acked) \
                             WHERE e.slot = u.slot"
                        ),
                        &[&slots, &acks],
                    )?;
                }
            }
            Some(fence) => {
                let mut slots = Vec::new();
                let mut held = Vec::new();
                let mut acks = Vec::new();
                let mut epochs = Vec::new();
                for &(slot, a) in acked {
                    let Some(name) = names.get(&slot) else {
                        continue;
                    };
                    let Some(epoch) = fence.epoch(name) else {
                        continue;
                    };
                    slots.push(i16::from(slot));
                    held.push(name.as_str());
                    acks.push(to_i64(a));
                    epochs.push(to_i64(epoch));
                }
                if !slots.is_empty() {
                    tx.execute(
                        &format!(
                            "UPDATE {s}.endpoints e SET acked = greatest(e.acked, least(u.acked, {head})) \
                             FROM UNNEST($1::smallint[], $2::text[], $3::bigint[], $4::bigint[]) \
                                  AS u(slot, name, acked, epoch), {s}.leases l \
                             WHERE e.slot = u.slot AND e.name = u.name AND l.endpoint = e.name \
                               AND l.owner = $5 AND l.epoch = u.epoch AND l.expires_at > now()"
                        ),
                        &[&slots, &held, &acks, &epochs, &fence.node()],
                    )?;
                }
            }
        }
        let endpoints = load_endpoints(&mut tx, &schema)?;
        tx.commit()?;
        self.endpoints = endpoints;
        Ok(())
    }

    /// Drops the partitions every endpoint has passed, if no other node is doing it.
    fn collect_garbage(&mut self) -> Result<(), postgres::Error> {
        let schema = self.config.schema.clone();
        let s = quoted(&schema);
        let client = self.client();
        // A look without locks first: most saves have nothing to drop, and the head lock
        // below holds every node's commits back for as long as it is held.
        let (min_acked, parts, _, first) = gc_view(client, &schema)?;
        if !parts.iter().any(|p| p.end <= to_i64(min_acked))
            && parts.first().is_none_or(|p| p.first == to_i64(first))
        {
            self.first_seq = first;
            self.used = schema::events_bytes(self.client(), &schema)?;
            return Ok(());
        }
        let mut tx = client.transaction()?;
        let got: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext('hookwire-gc:' || $1::text))",
                &[&schema],
            )?
            .get(0);
        if !got {
            return tx.commit();
        }
        // The head lock first, as a commit takes it: then the partitions' (a DROP locks the
        // events table) cannot deadlock with a commit waiting for the head.
        tx.execute(
            &format!("SELECT 1 FROM {s}.meta WHERE id = 1 FOR UPDATE"),
            &[],
        )?;
        let (min_acked, parts, head, _) = gc_view(&mut tx, &schema)?;
        let mut first = head;
        for p in &parts {
            // `p.end <= min_acked <= head`: never the partition holding the head.
            if p.end <= to_i64(min_acked) {
                tx.batch_execute(&format!(
                    "DROP TABLE {s}.{}",
                    schema::partition_name(p.first)
                ))?;
            } else {
                first = first.min(to_u64(p.first));
            }
        }
        tx.execute(
            &format!("UPDATE {s}.meta SET first_seq = $1 WHERE id = 1"),
            &[&to_i64(first)],
        )?;
        tx.commit()?;
        self.first_seq = first;
        self.used = schema::events_bytes(self.client(), &schema)?;
        Ok(())
    }

    /// A setting of this store's session, as `SHOW` gives it.
    #[cfg(test)]
    pub(crate) fn show(&mut self, setting: &str) -> String {
        self.ensure_conn("test").unwrap();
        self.client()
            .query_one(&format!("SHOW {setting}"), &[])
            .unwrap()
            .get(0)
    }

    /// The backend serving this store's connection (tests terminate it).
    #[cfg(test)]
    pub(crate) fn backend_pid(&mut self) -> i32 {
        self.ensure_conn("test").unwrap();
        self.client()
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0)
    }
}

/// What garbage collection decides on: the lowest cursor (the head if there is no endpoint),
/// the partitions, the head and the first seq.
fn gc_view(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<(u64, Vec<Partition>, u64, u64), postgres::Error> {
    let s = quoted(schema);
    let row = client.query_one(
        &format!(
            "SELECT m.next_seq, m.first_seq, (SELECT min(acked) FROM {s}.endpoints) \
             FROM {s}.meta m WHERE m.id = 1"
        ),
        &[],
    )?;
    let head = to_u64(row.get(0));
    let first = to_u64(row.get(1));
    let min_acked = row.get::<_, Option<i64>>(2).map_or(head, to_u64).min(head);
    let parts = schema::partitions(client, schema)?;
    Ok((min_acked, parts, head, first))
}

/// Every endpoint in the table.
fn load_endpoints(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<Vec<(String, EndpointState)>, postgres::Error> {
    let rows = client.query(
        &format!(
            "SELECT name, slot, since, acked FROM {}.endpoints ORDER BY slot",
            quoted(schema)
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let state = EndpointState {
                slot: u8::try_from(r.get::<_, i16>(1)).unwrap_or(u8::MAX),
                since: to_u64(r.get(2)),
                acked: to_u64(r.get(3)),
            };
            (r.get(0), state)
        })
        .collect())
}

impl Conn {
    fn prepare(mut client: Client, schema: &str) -> Result<Conn, postgres::Error> {
        let insert = client.prepare(&format!(
            "INSERT INTO {}.events (seq, mask, time_ms, payload) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])",
            quoted(schema)
        ))?;
        Ok(Conn { client, insert })
    }
}

impl Store for PgStore {
    fn append(&mut self, mask: u64, time_ms: u64, payload: &[u8]) -> Result<u64, Error> {
        if !self.in_group {
            self.begin_group()?;
        }
        let seq = self.next_seq;
        self.group.seqs.push(to_i64(seq));
        // Masks and times are kept bit for bit (a mask with bit 63 is a negative bigint).
        self.group.masks.push(mask as i64);
        self.group.times.push(time_ms as i64);
        self.group.bytes.extend_from_slice(payload);
        self.group.ends.push(self.group.bytes.len());
        self.next_seq += 1;
        Ok(seq)
    }

    /// Returns the highest seq committed; with nothing appended,
    /// [`durable_through`](Store::durable_through).
    fn commit(&mut self) -> Result<u64, Error> {
        if !self.in_group {
            return Ok(self.durable);
        }
        let through = self.next_seq - 1;
        match self.write_group(through) {
            Ok(new_end) => {
                if new_end.is_some() {
                    self.partition_end = new_end;
                }
                self.in_group = false;
                self.group.clear();
                self.durable = through;
                self.group_start = self.next_seq;
                Ok(through)
            }
            Err(e) => Err(self.fail("commit", e)),
        }
    }

    /// The highest seq this store knows committed: its own last commit, or the head it read
    /// at open or at the start of its last group. Other nodes may have committed more.
    fn durable_through(&self) -> u64 {
        self.durable.max(self.group_start.saturating_sub(1))
    }

    /// The head as last seen: the next append's seq while a group is open; else the head
    /// at open or after this store's last group (other nodes may have moved it since).
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first seq as of the open or the last [`save_cursors`](Store::save_cursors).
    fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The events partitions' size, as of the open or the last
    /// [`save_cursors`](Store::save_cursors).
    fn used_bytes(&self) -> u64 {
        self.used
    }

    /// `u64::MAX`: the database's disk is the quota.
    fn quota_bytes(&self) -> u64 {
        u64::MAX
    }

    /// A reader with a connection of its own (opened at its first read).
    fn reader(&self) -> Result<Box<dyn StoreReader>, Error> {
        Ok(Box::new(PgReader::new(self.config.clone())))
    }

    /// Registers `name` under the head lock, so nodes that register the same endpoints
    /// together agree on their slots: it takes the lowest free slot and starts at the head.
    /// Commits the open group first.
    fn endpoint(&mut self, name: &str) -> Result<EndpointState, Error> {
        self.finish_group()?;
        self.ensure_conn("endpoint")?;
        let schema = self.config.schema.clone();
        let s = quoted(&schema);
        let r = (|| -> Result<Result<(EndpointState, Vec<_>), Error>, postgres::Error> {
            let mut tx = self.client().transaction()?;
            let head: i64 = tx
                .query_one(
                    &format!("SELECT next_seq FROM {s}.meta WHERE id = 1 FOR UPDATE"),
                    &[],
                )?
                .get(0);
            let known = load_endpoints(&mut tx, &schema)?;
            if let Some((_, st)) = known.iter().find(|(n, _)| n == name) {
                let st = *st;
                tx.commit()?;
                return Ok(Ok((st, known)));
            }
            // Retired slots (forgotten while shared) are never given out again.
            let retired = tx
                .query(&format!("SELECT slot FROM {s}.retired_slots"), &[])?
                .iter()
                .fold(0u64, |m, r| m | 1 << (r.get::<_, i16>(0) as u64 % 64));
            let taken = known
                .iter()
                .fold(retired, |m, (_, e)| m | 1 << (e.slot % 64));
            let slot = (!taken).trailing_zeros() as usize;
            if slot >= SLOTS {
                return Ok(Err(Error::TooManyEndpoints {
                    limit: SLOTS,
                    durable: true,
                }));
            }
            tx.execute(
                &format!(
                    "INSERT INTO {s}.endpoints (name, slot, since, acked) VALUES ($1, $2, $3, $3)"
                ),
                &[&name, &(slot as i16), &head],
            )?;
            tx.execute(
                &format!("INSERT INTO {s}.leases (endpoint) VALUES ($1) ON CONFLICT DO NOTHING"),
                &[&name],
            )?;
            let known = load_endpoints(&mut tx, &schema)?;
            tx.commit()?;
            let st = EndpointState {
                slot: slot as u8,
                since: to_u64(head),
                acked: to_u64(head),
            };
            Ok(Ok((st, known)))
        })();
        let (st, known) = r.map_err(|e| self.fail("endpoint", e))??;
        self.endpoints = known;
        Ok(st)
    }

    /// Removes `name` and its lease (under the head lock). Commits the open group first.
    fn forget(&mut self, name: &str) -> Result<Option<EndpointState>, Error> {
        self.finish_group()?;
        self.ensure_conn("forget")?;
        let schema = self.config.schema.clone();
        let s = quoted(&schema);
        let shared = self.fence.is_some();
        let r = (|| -> Result<_, postgres::Error> {
            let mut tx = self.client().transaction()?;
            tx.execute(
                &format!("SELECT 1 FROM {s}.meta WHERE id = 1 FOR UPDATE"),
                &[],
            )?;
            let gone = tx.query_opt(
                &format!("DELETE FROM {s}.endpoints WHERE name = $1 RETURNING slot, since, acked"),
                &[&name],
            )?;
            tx.execute(
                &format!("DELETE FROM {s}.leases WHERE endpoint = $1"),
                &[&name],
            )?;
            if shared && let Some(r) = &gone {
                // Several nodes: one that still has the endpoint configured would go on
                // writing its slot's bit, which a new endpoint given the slot would receive.
                // The slot is retired instead (docs/scale-out.md, "Forgetting an endpoint").
                tx.execute(
                    &format!("INSERT INTO {s}.retired_slots (slot, name) VALUES ($1, $2)"),
                    &[&r.get::<_, i16>(0), &name],
                )?;
            }
            let known = load_endpoints(&mut tx, &schema)?;
            tx.commit()?;
            let gone = gone.map(|r| EndpointState {
                slot: u8::try_from(r.get::<_, i16>(0)).unwrap_or(u8::MAX),
                since: to_u64(r.get(1)),
                acked: to_u64(r.get(2)),
            });
            Ok((gone, known))
        })();
        let (gone, known) = r.map_err(|e| self.fail("forget", e))?;
        self.endpoints = known;
        Ok(gone)
    }

    /// The endpoints as this store last read them (at open, and at each `endpoint`, `forget`
    /// and `save_cursors`): endpoints other nodes registered since, or cursors they moved,
    /// show up at the next of those calls.
    fn endpoints(&self) -> Vec<(String, EndpointState)> {
        self.endpoints.clone()
    }

    /// Saves the cursors in one transaction (never moving one back, nor past the head), then
    /// drops the partitions every endpoint has passed and moves `first_seq` (skipped while
    /// another node does it). With a [`Fence`], only the cursors of endpoints this node
    /// holds, and only while the database agrees (the lease row has this node as owner, the
    /// same epoch, and has not expired); the others are skipped without an error. Commits the
    /// open group first.
    fn save_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), Error> {
        self.finish_group()?;
        self.ensure_conn("save cursors")?;
        let r = self.write_cursors(acked);
        r.map_err(|e| self.fail("save cursors", e))?;
        let r = self.collect_garbage();
        r.map_err(|e| self.fail("remove partitions", e))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.dead_letters.clone()
    }

    /// What the open found: the head and first seq, and the number of partitions (as
    /// `segments`). Nothing is ever repaired.
    fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    fn retries_failures(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }
}
