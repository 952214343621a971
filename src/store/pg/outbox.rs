//! The transactional outbox: a host program inserts events into `S.outbox` in its own
//! transaction, so an event exists exactly when the program's change commits; hookwire's
//! relay publishes them and deletes them.
//!
//! The relay takes the oldest rows first and deletes what it published, so a row that
//! commits late (a transaction that took a lower id but committed after higher ones) is
//! simply taken by a later pass: nothing is skipped, though such events may be published out
//! of id order. A crash between publishing and deleting publishes them again (at least once).

use postgres::GenericClient;

use super::{quoted, validate_schema};
use crate::{Error, RawEvent};

/// The statement that puts one event in the outbox, for programs in any language: replace
/// `{schema}` with hookwire's schema (as in `PgConfig::schema`, default `hookwire`), and
/// bind the event's JSON, as text, to `$1`. Run it in the transaction whose commit should
/// publish the event. [`outbox_insert_sql`] does the replacing; [`insert_outbox`] runs it.
pub const OUTBOX_INSERT_SQL: &str =
    "INSERT INTO \"{schema}\".outbox (event) VALUES ($1::text::json)";

/// [`OUTBOX_INSERT_SQL`] for `schema`. Fails with [`Error::Config`] if `schema` is not a
/// name hookwire uses (see `PgConfig::schema`).
pub fn outbox_insert_sql(schema: &str) -> Result<String, Error> {
    validate_schema(schema)?;
    Ok(OUTBOX_INSERT_SQL.replace("{schema}", schema))
}

/// Inserts `event` into the outbox of `schema` through `client`: pass the program's own
/// [`postgres::Transaction`] so the event is published if and only if it commits. Fails with
/// [`Error::Config`] for a schema name hookwire does not use, [`Error::Storage`] if the
/// database fails (the transaction is then aborted, as with any failed statement).
pub fn insert_outbox(
    client: &mut impl GenericClient,
    schema: &str,
    event: &RawEvent,
) -> Result<(), Error> {
    let sql = outbox_insert_sql(schema)?;
    client
        .execute(&sql, &[&event.json()])
        .map(|_| ())
        .map_err(|e| super::storage_error("insert outbox", &format!("schema {schema}"), e))
}

/// The oldest `limit` events of the outbox (by id), with their ids, as JSON text. Only
/// committed rows are seen.
pub(crate) fn fetch_outbox(
    client: &mut impl GenericClient,
    schema: &str,
    limit: i64,
) -> Result<Vec<(i64, String)>, Error> {
    validate_schema(schema)?;
    let rows = client
        .query(
            &format!(
                "SELECT id, event::text FROM {}.outbox ORDER BY id LIMIT $1",
                quoted(schema)
            ),
            &[&limit],
        )
        .map_err(|e| super::storage_error("fetch outbox", &format!("schema {schema}"), e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Deletes the outbox rows `ids` (published).
pub(crate) fn delete_outbox(
    client: &mut impl GenericClient,
    schema: &str,
    ids: &[i64],
) -> Result<(), Error> {
    validate_schema(schema)?;
    client
        .execute(
            &format!("DELETE FROM {}.outbox WHERE id = ANY($1)", quoted(schema)),
            &[&ids],
        )
        .map(|_| ())
        .map_err(|e| super::storage_error("delete outbox", &format!("schema {schema}"), e))
}
