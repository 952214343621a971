//! The tables, their versions, and the events table's partitions.
//!
//! Version 1 (`S` is the schema, always double-quoted):
//!
//! ```text
//! S.meta          (id = 1, version, next_seq, first_seq): the head of the log; its row lock
//!                 orders every node's commits
//! S.events        (seq, mask, time_ms, payload) PARTITION BY RANGE (seq), partitions
//!                 S.events_<first seq, 20 digits> FOR VALUES FROM (a) TO (a + partition_events)
//! S.endpoints     (name, slot UNIQUE, since, acked)
//! S.leases        (endpoint, owner, epoch, expires_at): which node delivers an endpoint
//! S.nodes         (name, started_at, expires_at, info)
//! S.dead_letters  (id bigserial, endpoint, seq, published_ms, failed_ms, status, error,
//!                 attempts, event): the event in the log's record encoding
//! S.outbox        (id bigserial, event json, created_at): events host programs insert in
//!                 their own transactions
//! S.retired_slots (slot, name, retired_at): slots of endpoints forgotten while several
//!                 nodes share the schema, never given to another endpoint
//! ```

use postgres::Client;

use super::{PgConfig, location, quoted, storage_error, to_i64};
use crate::Error;

/// The version of the tables this build creates and understands. A schema at a newer
/// version (created by a newer hookwire) is refused rather than written with old rules.
pub const SCHEMA_VERSION: i32 = 1;

/// Creates the tables of `config.schema` (and the schema) if they are missing, or migrates
/// them to [`SCHEMA_VERSION`]; a new events table gets its first partition, `1 .. 1 +
/// config.partition_events`. [`PgStore::open`](super::PgStore::open) calls it. Everything runs in one transaction under an advisory lock on the
/// schema's name, so nodes that start together do not race: one creates, the others then
/// find it done.
///
/// Fails with [`Error::Config`] if `config` is not valid ([`PgConfig::validate`]) or the
/// tables are at a newer version than this build knows; with [`Error::Storage`] if the
/// database fails.
pub fn migrate(client: &mut Client, config: &PgConfig) -> Result<(), Error> {
    config.validate()?;
    let (schema, partition_events) = (config.schema.as_str(), config.partition_events);
    let location = location(config);
    let fail = |e: postgres::Error| storage_error("migrate", &location, e);
    let s = quoted(schema);
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('hookwire:' || $1::text))",
        &[&schema],
    )
    .map_err(fail)?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass(quote_ident($1::text) || '.meta') IS NOT NULL",
            &[&schema],
        )
        .map_err(fail)?
        .get(0);
    if exists {
        let version: i32 = tx
            .query_one(&format!("SELECT version FROM {s}.meta WHERE id = 1"), &[])
            .map_err(fail)?
            .get(0);
        if version > SCHEMA_VERSION {
            return Err(Error::config(
                "schema",
                format!(
                    "the tables in schema {schema:?} are at version {version}, newer than this \
                     hookwire knows ({SCHEMA_VERSION}): upgrade hookwire, or use another schema"
                ),
            ));
        }
        // Version 1 is the first: nothing to migrate from yet.
        return tx.commit().map_err(fail);
    }
    let end = 1 + to_i64(partition_events);
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE {s}.meta (
             id int PRIMARY KEY CHECK (id = 1),
             version int NOT NULL,
             next_seq bigint NOT NULL,
             first_seq bigint NOT NULL);
         INSERT INTO {s}.meta (id, version, next_seq, first_seq) VALUES (1, {SCHEMA_VERSION}, 1, 1);
         CREATE TABLE {s}.events (
             seq bigint NOT NULL,
             mask bigint NOT NULL,
             time_ms bigint NOT NULL,
             payload bytea NOT NULL,
             PRIMARY KEY (seq)) PARTITION BY RANGE (seq);
         CREATE TABLE {s}.{first} PARTITION OF {s}.events FOR VALUES FROM (1) TO ({end});
         CREATE TABLE {s}.endpoints (
             name text PRIMARY KEY,
             slot smallint NOT NULL UNIQUE,
             since bigint NOT NULL,
             acked bigint NOT NULL);
         CREATE TABLE {s}.leases (
             endpoint text PRIMARY KEY,
             owner text,
             epoch bigint NOT NULL DEFAULT 0,
             expires_at timestamptz);
         CREATE TABLE {s}.nodes (
             name text PRIMARY KEY,
             started_at timestamptz NOT NULL,
             expires_at timestamptz NOT NULL,
             info jsonb);
         CREATE TABLE {s}.dead_letters (
             id bigserial PRIMARY KEY,
             endpoint text NOT NULL,
             seq bigint NOT NULL,
             published_ms bigint NOT NULL,
             failed_ms bigint NOT NULL,
             status int,
             error text NOT NULL,
             attempts int NOT NULL,
             event bytea NOT NULL);
         CREATE TABLE {s}.outbox (
             id bigserial PRIMARY KEY,
             event json NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE {s}.retired_slots (
             slot smallint PRIMARY KEY,
             name text NOT NULL,
             retired_at timestamptz NOT NULL DEFAULT now());",
        first = partition_name(1),
    ))
    .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// The name of the events partition that starts at `first` (unquoted; lower-case, so
/// quoting changes nothing).
pub(crate) fn partition_name(first: i64) -> String {
    format!("events_{first:020}")
}

/// One partition of the events table: `first .. end` (end excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    pub(crate) first: i64,
    pub(crate) end: i64,
}

/// The events table's partitions, lowest first.
pub(crate) fn partitions(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<Vec<Partition>, postgres::Error> {
    let rows = client.query(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = (quote_ident($1::text) || '.events')::regclass",
        &[&schema],
    )?;
    let mut out: Vec<Partition> = rows.iter().filter_map(|r| parse_bound(r.get(0))).collect();
    out.sort_by_key(|p| p.first);
    Ok(out)
}

/// Reads `FOR VALUES FROM ('1') TO ('1025')` (how PostgreSQL prints a range bound).
pub(crate) fn parse_bound(expr: &str) -> Option<Partition> {
    let rest = &expr[expr.find("FROM")? + 4..];
    let to = rest.find("TO")?;
    let number = |s: &str| -> Option<i64> {
        let digits: String = s
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    };
    Some(Partition {
        first: number(&rest[..to])?,
        end: number(&rest[to + 2..])?,
    })
}

/// Creates the events partition `first .. first + events` (in the caller's transaction).
pub(crate) fn create_partition(
    client: &mut impl postgres::GenericClient,
    schema: &str,
    first: i64,
    events: u64,
) -> Result<(), postgres::Error> {
    let s = quoted(schema);
    client.batch_execute(&format!(
        "CREATE TABLE {s}.{name} PARTITION OF {s}.events FOR VALUES FROM ({first}) TO ({end})",
        name = partition_name(first),
        end = first.saturating_add(to_i64(events)),
    ))
}

/// Bytes the events partitions take (tables, indexes and TOAST).
pub(crate) fn events_bytes(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<u64, postgres::Error> {
    let row = client.query_one(
        "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint FROM pg_inherits i \
         WHERE i.inhparent = (quote_ident($1::text) || '.events')::regclass",
        &[&schema],
    )?;
    Ok(super::to_u64(row.get(0)))
}
