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

pub use leases::Fence;

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
        let s = self.schema.as_bytes();
        let ok = !s.is_empty()
            && s.len() <= 63
            && !s[0].is_ascii_digit()
            && s.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !ok {
            return Err(Error::config(
                "schema",
                format!(
                    "{:?} is not a schema name hookwire uses: lower-case letters, digits and \
                     `_`, not starting with a digit, 1 to 63 characters",
                    self.schema
                ),
            ));
        }
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

/// `url` without a password (`postgres://u:secret@h/db` -> `postgres://u:***@h/db`;
/// `password=secret` -> `password=***`).
pub(crate) fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:***{}", &userinfo[..colon], &rest[at..]);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
