//! A store in PostgreSQL, shared by several hookwire nodes (feature `postgres`).
//!
//! The events of every node go into one table, in one order: each commit takes the head row's
//! lock (`meta`), numbers its events from the head, inserts them and moves the head, so
//! sequence numbers are assigned in commit order and a reader that sees `seq` has every lower
//! one it will ever see. Endpoints, their cursors, their leases (which node delivers them) and
//! dead letters live beside it, in a schema of the user's choice. See `docs/scale-out.md`.
//!
//! `PgStore` implements [`Store`](super::Store), so the engine drives it as it drives the
//! local log: one persistence thread appends and commits, readers read on their own
//! connections, and no delivery worker ever waits on the database.

mod leases;
mod letters;
mod outbox;
mod reader;
mod relay;
mod schema;
mod store;
#[cfg(test)]
mod tests;

pub use leases::{ClusterView, Fence, Lease, LeaseManager, LeaseOptions};
pub use letters::PgDeadLetters;
pub use outbox::{OUTBOX_INSERT_SQL, insert_outbox, outbox_insert_sql};
pub(crate) use outbox::{delete_outbox, fetch_outbox};
pub use reader::PgReader;
pub use relay::{OutboxRelay, RelayStats};
pub use schema::{SCHEMA_VERSION, migrate};
pub use store::PgStore;

use std::time::Duration;

use crate::Error;

/// How to reach the database, and where hookwire keeps its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgConfig {
    /// A libpq-style connection string or URL (`postgres://user@host:5432/db`,
    /// `host=... user=... dbname=...`).
    pub url: String,
    /// The schema hookwire's tables live in (created and migrated if missing). Default
    /// `hookwire`. Lower-case letters, digits and `_`, not starting with a digit, at most 63.
    pub schema: String,
    /// Events per partition of the events table: old events go a whole partition at a time
    /// once every endpoint has passed it. Default 1,048,576.
    pub partition_events: u64,
    /// How long connecting may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every hookwire connection. Default 30 s.
    pub statement_timeout: Duration,
    /// The server-side `idle_in_transaction_session_timeout` of every hookwire connection
    /// (at most half the statement timeout): a node that stalls in the middle of one of its
    /// transactions (paused, cut off) loses its connection after this long, so the locks it
    /// held (the head row every commit takes, lease rows) stall the other nodes no longer.
    /// hookwire's transactions are only idle between their statements, for microseconds.
    /// Default 2 s.
    pub idle_in_transaction_timeout: Duration,
    /// The most bytes the dead letters may take (the table's size); past it an append fails
    /// with [`Error::DeadLettersFull`]. Default 256 MiB.
    pub dead_letter_bytes: u64,
}

impl PgConfig {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: "hookwire".into(),
            partition_events: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(2),
            dead_letter_bytes: 256 << 20,
        }
    }

    /// The same, in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Checks the settings: the schema name and the partition size.
    pub fn validate(&self) -> Result<(), Error> {
        validate_schema(&self.schema)?;
        if self.partition_events < 1024 {
            return Err(Error::config(
                "partition_events",
                "must be at least 1024 events",
            ));
        }
        Ok(())
    }

    /// The connection string without its password, for messages.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

/// Checks that `schema` is a name hookwire uses (so it can be double-quoted as is).
pub(crate) fn validate_schema(schema: &str) -> Result<(), Error> {
    let s = schema.as_bytes();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s[0].is_ascii_digit()
        && s.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        return Ok(());
    }
    Err(Error::config(
        "schema",
        format!(
            "{schema:?} is not a schema name hookwire uses: lower-case letters, digits and \
             `_`, not starting with a digit, 1 to 63 characters"
        ),
    ))
}

/// `url` without a password (`postgres://u:secret@h/db` -> `postgres://u:***@h/db`;
/// `password=secret` -> `password=***`).
pub(crate) fn redact(url: &str) -> String {
    let hide = |kv: &str| {
        if kv.starts_with("password=") {
            "password=***".to_string()
        } else {
            kv.to_string()
        }
    };
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let mut out = url[..url.len() - rest.len()].to_string();
        let (main, query) = match rest.find('?') {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        // The last `@`: a password may hold one (it should be percent-encoded, but).
        match main.rfind('@').map(|at| (&main[..at], &main[at..])) {
            Some((userinfo, host)) => match userinfo.find(':') {
                Some(colon) => out.push_str(&format!("{}:***{host}", &userinfo[..colon])),
                None => out.push_str(main),
            },
            None => out.push_str(main),
        }
        if let Some(query) = query {
            out.push('?');
            out.push_str(&query.split('&').map(hide).collect::<Vec<_>>().join("&"));
        }
        return out;
    }
    // `key = value` pairs, values maybe 'quoted' (with \' and \\ escapes), as libpq reads them.
    let mut pairs = Vec::new();
    let mut chars = url.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return pairs.join(" ");
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return "(a connection string that cannot be read)".into();
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return "(a connection string that cannot be read)".into(),
                }
            }
            value = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push(hide(&format!("{key}={value}")));
    }
}

/// Where errors say they happened: the connection string without its password, and the
/// schema (`host=... user=... schema hookwire`).
pub(crate) fn location(config: &PgConfig) -> String {
    format!("{} schema {}", config.redacted(), config.schema)
}

/// An [`Error::Storage`] for `op` at `location`. A `postgres::Error` is rendered with its
/// causes (its own `Display` says only "db error"); rust-postgres never puts the password in
/// one.
pub(crate) fn storage_error(
    op: &'static str,
    location: &str,
    e: impl std::fmt::Display + 'static,
) -> Error {
    let any: &dyn std::any::Any = &e;
    let message = match any.downcast_ref::<postgres::Error>() {
        Some(pg) => {
            let mut message = pg.to_string();
            let mut cause = std::error::Error::source(pg);
            while let Some(c) = cause {
                message.push_str(": ");
                message.push_str(&c.to_string());
                cause = c.source();
            }
            message
        }
        None => e.to_string(),
    };
    Error::Storage {
        op,
        path: location.to_string(),
        message,
        source: None,
    }
}

/// Opens a connection as `config` says: its connect timeout, the server-side
/// `statement_timeout` and `idle_in_transaction_session_timeout` (at most half the
/// statement timeout; through the startup `options`, which replace any the URL set) and
/// `application_name=hookwire`. Without TLS (`sslmode=require` fails).
///
/// The idle-in-transaction timeout matters for the head lock: a node that stalls (or whose
/// network goes) with a group open would otherwise hold every node's commits back until the
/// server noticed the connection was dead, which TCP alone may take hours to do. It is at
/// most half the statement timeout so that a commit waiting for the lock (a statement)
/// outlasts a stalled holder.
///
/// Transactions are `READ COMMITTED` whatever the database's default: the head lock relies
/// on it (a commit waiting for the lock then reads the head the last one left; under
/// `REPEATABLE READ` it would fail with a serialization error instead).
pub(crate) fn connect(config: &PgConfig) -> Result<postgres::Client, Error> {
    let at = location(config);
    let mut pg: postgres::Config = config
        .url
        .parse()
        .map_err(|e: postgres::Error| storage_error("connect", &at, e))?;
    pg.connect_timeout(config.connect_timeout)
        .options(&format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={} \
             -c default_transaction_isolation=read\\ committed",
            config.statement_timeout.as_millis().max(1),
            config
                .idle_in_transaction_timeout
                .as_millis()
                .min(config.statement_timeout.as_millis() / 2)
                .max(1)
        ))
        .application_name("hookwire")
        // A database that vanished without closing the connection (a dead host, a cut
        // network) is noticed too, not waited on forever.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .tcp_user_timeout(config.statement_timeout + Duration::from_secs(5));
    pg.connect(postgres::NoTls)
        .map_err(|e| storage_error("connect", &at, e))
}

/// `"schema"`, quoted as an SQL identifier (the name was validated: no quote in it).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// A `u64` sequence number or bound as the database's `bigint` (saturating at `i64::MAX`).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` the store wrote from a `u64` back (negative: 0).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
