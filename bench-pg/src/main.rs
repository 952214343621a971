//! Measures the two PostgreSQL client candidates of issue 12 on the machine's PostgreSQL:
//! rust-postgres' blocking client (`postgres`) and libpq through `pq-sys`.
//!
//! Ingest: N events of PAYLOAD bytes into `events (seq bigserial, endpoint int, payload bytea)`
//! with each method; delivery: claim-and-mark by cursor (read 100 rows past the cursor without a
//! transaction, then move the cursor in its own one-statement transaction). Every method runs
//! RUNS times; the median and all runs are printed. Everything lives in a schema of its own,
//! `hookwire_bench_<pid>`, dropped at the end (also when a step fails).
//!
//! `bench-pg [DSN] [N] [RUNS]`, defaults `host=127.0.0.1 port=5432 user=root dbname=test`,
//! 100000, 3.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::raw::{c_char, c_int};
use std::time::Instant;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};

const PAYLOAD: usize = 300;

type Res<T> = Result<T, String>;

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!(
        r#"{{"id":"{i:010}","action":"push","target":{{"repository":"library/app","tag":"v1","mediaType":"application/vnd.oci.image.manifest.v1+json"}},"pad":""#
    )
    .into_bytes();
    while p.len() < PAYLOAD - 2 {
        p.push(b'x');
    }
    p.extend_from_slice(b"\"}");
    p
}

fn threads() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .map(|l| l[8..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn reset(c: &mut Client, schema: &str) -> Res<()> {
    c.batch_execute(&format!(
        "TRUNCATE {schema}.events RESTART IDENTITY; UPDATE {schema}.cursors SET seq = 0"
    ))
    .map_err(|e| e.to_string())
}

fn count(c: &mut Client, schema: &str) -> Res<i64> {
    let row = c
        .query_one(&format!("SELECT count(*) FROM {schema}.events"), &[])
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// (a) rust-postgres: one prepared INSERT ... SELECT FROM UNNEST($1, $2) per batch.
fn pg_unnest(c: &mut Client, schema: &str, n: u64, batch: u64) -> Res<()> {
    let st = c
        .prepare(&format!(
            "INSERT INTO {schema}.events (endpoint, payload) SELECT * FROM UNNEST($1::int[], $2::bytea[])"
        ))
        .map_err(|e| e.to_string())?;
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let eps: Vec<i32> = (i..end).map(|k| (k % 8) as i32).collect();
        let pls: Vec<Vec<u8>> = (i..end).map(payload).collect();
        c.execute(&st, &[&eps, &pls]).map_err(|e| e.to_string())?;
        i = end;
    }
    Ok(())
}

/// (b) rust-postgres: COPY BINARY, one COPY per `batch` rows.
fn pg_copy_binary(c: &mut Client, schema: &str, n: u64, batch: u64) -> Res<()> {
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let w = c
            .copy_in(&format!(
                "COPY {schema}.events (endpoint, payload) FROM STDIN (FORMAT binary)"
            ))
            .map_err(|e| e.to_string())?;
        let mut w = BinaryCopyInWriter::new(w, &[Type::INT4, Type::BYTEA]);
        for k in i..end {
            let ep = (k % 8) as i32;
            let p = payload(k);
            w.write(&[&ep, &p]).map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
        i = end;
    }
    Ok(())
}

/// (2) claim-and-mark by cursor with rust-postgres; returns events delivered.
fn pg_deliver(c: &mut Client, schema: &str) -> Res<u64> {
    let read = c
        .prepare(&format!(
            "SELECT seq, payload FROM {schema}.events WHERE seq > $1 ORDER BY seq LIMIT 100"
        ))
        .map_err(|e| e.to_string())?;
    let mark = c
        .prepare(&format!(
            "UPDATE {schema}.cursors SET seq = $1 WHERE endpoint = 0 AND seq < $1"
        ))
        .map_err(|e| e.to_string())?;
    let mut cursor: i64 = 0;
    let mut delivered = 0u64;
    let mut bytes = 0usize;
    loop {
        let rows = c.query(&read, &[&cursor]).map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else { break };
        let last: i64 = last.get(0);
        for r in &rows {
            let p: &[u8] = r.get(1);
            bytes += p.len();
        }
        delivered += rows.len() as u64;
        // The HTTP POST of the batch would happen here, outside any transaction.
        let moved = c.execute(&mark, &[&last]).map_err(|e| e.to_string())?;
        if moved != 1 {
            return Err(format!("cursor did not move to {last}"));
        }
        cursor = last;
    }
    std::hint::black_box(bytes);
    Ok(delivered)
}

/// A libpq connection; `PQfinish`ed on drop.
struct Pq(*mut pq_sys::PGconn);

impl Pq {
    fn connect(conninfo: &str) -> Res<Pq> {
        let ci = CString::new(conninfo).map_err(|e| e.to_string())?;
        // SAFETY: `ci` is a NUL-terminated string alive for the call; PQconnectdb returns an
        // owned connection (or NULL on out-of-memory) that we free exactly once in Drop.
        let conn = unsafe { pq_sys::PQconnectdb(ci.as_ptr()) };
        if conn.is_null() {
            return Err("PQconnectdb: out of memory".into());
        }
        let pq = Pq(conn);
        // SAFETY: `pq.0` is a live connection.
        if unsafe { pq_sys::PQstatus(pq.0) } != pq_sys::ConnStatusType::CONNECTION_OK {
            return Err(pq.error());
        }
        Ok(pq)
    }

    fn error(&self) -> String {
        // SAFETY: `self.0` is live; PQerrorMessage returns a NUL-terminated string owned by the
        // connection, copied here before any other libpq call.
        unsafe { CStr::from_ptr(pq_sys::PQerrorMessage(self.0)) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    /// Takes the next result, checks its status is one of `ok`, frees it. `None` when libpq
    /// says the current query's results are done (a NULL result).
    fn next_result(&self, ok: &[pq_sys::ExecStatusType]) -> Res<Option<pq_sys::ExecStatusType>> {
        // SAFETY: `self.0` is live; a non-NULL result is owned by us and cleared exactly once.
        unsafe {
            let r = pq_sys::PQgetResult(self.0);
            if r.is_null() {
                return Ok(None);
            }
            let st = pq_sys::PQresultStatus(r);
            let err = CStr::from_ptr(pq_sys::PQresultErrorMessage(r))
                .to_string_lossy()
                .into_owned();
            pq_sys::PQclear(r);
            if ok.contains(&st) {
                Ok(Some(st))
            } else {
                Err(format!("libpq result {st:?}: {err}"))
            }
        }
    }

    /// Runs one command with PQexec and checks its status.
    fn exec(&self, sql: &str, ok: pq_sys::ExecStatusType) -> Res<()> {
        let q = CString::new(sql).map_err(|e| e.to_string())?;
        // SAFETY: `q` outlives the call; the result is owned by us and cleared exactly once.
        unsafe {
            let r = pq_sys::PQexec(self.0, q.as_ptr());
            if r.is_null() {
                return Err(self.error());
            }
            let st = pq_sys::PQresultStatus(r);
            let err = CStr::from_ptr(pq_sys::PQresultErrorMessage(r))
                .to_string_lossy()
                .into_owned();
            pq_sys::PQclear(r);
            if st != ok {
                return Err(format!("{sql}: {st:?}: {err}"));
            }
        }
        Ok(())
    }
}

impl Drop for Pq {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from PQconnectdb and is finished only here.
        unsafe { pq_sys::PQfinish(self.0) }
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// (c1) libpq COPY text, one COPY per `batch` rows (bytea as `\\x` hex).
fn pq_copy_text(pq: &Pq, schema: &str, n: u64, batch: u64) -> Res<()> {
    use pq_sys::ExecStatusType::*;
    let mut i = 0;
    let mut buf = String::new();
    while i < n {
        let end = (i + batch).min(n);
        pq.exec(
            &format!("COPY {schema}.events (endpoint, payload) FROM STDIN"),
            PGRES_COPY_IN,
        )?;
        buf.clear();
        for k in i..end {
            let _ = write!(buf, "{}\t\\\\x", k % 8);
            hex_into(&mut buf, &payload(k));
            buf.push('\n');
        }
        // SAFETY: `buf` is alive for the call and its length fits c_int (checked); the
        // connection is in COPY IN state (checked above); blocking mode, so 1 means sent/queued.
        unsafe {
            let len = c_int::try_from(buf.len()).map_err(|e| e.to_string())?;
            if pq_sys::PQputCopyData(pq.0, buf.as_ptr() as *const c_char, len) != 1 {
                return Err(pq.error());
            }
            if pq_sys::PQputCopyEnd(pq.0, std::ptr::null()) != 1 {
                return Err(pq.error());
            }
        }
        pq.next_result(&[PGRES_COMMAND_OK])?;
        if pq.next_result(&[])?.is_some() {
            return Err("COPY: unexpected extra result".into());
        }
        i = end;
    }
    Ok(())
}

/// (c1b) libpq COPY BINARY (the same wire format `BinaryCopyInWriter` writes, by hand), one
/// COPY per `batch` rows.
fn pq_copy_binary(pq: &Pq, schema: &str, n: u64, batch: u64) -> Res<()> {
    use pq_sys::ExecStatusType::*;
    let mut i = 0;
    let mut buf: Vec<u8> = Vec::new();
    while i < n {
        let end = (i + batch).min(n);
        pq.exec(
            &format!("COPY {schema}.events (endpoint, payload) FROM STDIN (FORMAT binary)"),
            PGRES_COPY_IN,
        )?;
        buf.clear();
        // Header: signature, flags, header extension length.
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        for k in i..end {
            let p = payload(k);
            buf.extend_from_slice(&2i16.to_be_bytes());
            buf.extend_from_slice(&4i32.to_be_bytes());
            buf.extend_from_slice(&((k % 8) as i32).to_be_bytes());
            let len = i32::try_from(p.len()).map_err(|e| e.to_string())?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&p);
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        // SAFETY: as in `pq_copy_text`: `buf` outlives the call, its length fits c_int, the
        // connection is in COPY IN state.
        unsafe {
            let len = c_int::try_from(buf.len()).map_err(|e| e.to_string())?;
            if pq_sys::PQputCopyData(pq.0, buf.as_ptr() as *const c_char, len) != 1 {
                return Err(pq.error());
            }
            if pq_sys::PQputCopyEnd(pq.0, std::ptr::null()) != 1 {
                return Err(pq.error());
            }
        }
        pq.next_result(&[PGRES_COMMAND_OK])?;
        if pq.next_result(&[])?.is_some() {
            return Err("COPY: unexpected extra result".into());
        }
        i = end;
    }
    Ok(())
}

/// (c2) libpq pipeline mode: one prepared single-row INSERT per event (binary parameters),
/// a sync point (one implicit transaction) every `batch` events, results read after each sync.
/// Sync batches stay small (~1000 results of a few bytes), so the blocking-mode pipeline cannot
/// fill both socket buffers and deadlock.
fn pq_pipeline(pq: &Pq, schema: &str, n: u64, batch: u64) -> Res<()> {
    use pq_sys::ExecStatusType::*;
    let name = CString::new("ins").map_err(|e| e.to_string())?;
    let sql = CString::new(format!(
        "INSERT INTO {schema}.events (endpoint, payload) VALUES ($1::int4, $2::bytea)"
    ))
    .map_err(|e| e.to_string())?;
    // SAFETY: strings outlive the call; zero parameter types (inferred from the casts).
    unsafe {
        let r = pq_sys::PQprepare(pq.0, name.as_ptr(), sql.as_ptr(), 2, std::ptr::null());
        if r.is_null() || pq_sys::PQresultStatus(r) != PGRES_COMMAND_OK {
            if !r.is_null() {
                pq_sys::PQclear(r);
            }
            return Err(pq.error());
        }
        pq_sys::PQclear(r);
        if pq_sys::PQenterPipelineMode(pq.0) != 1 {
            return Err(pq.error());
        }
    }
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        for k in i..end {
            let ep = ((k % 8) as i32).to_be_bytes();
            let p = payload(k);
            let values = [ep.as_ptr() as *const c_char, p.as_ptr() as *const c_char];
            let lengths = [4 as c_int, p.len() as c_int];
            let formats = [1 as c_int, 1];
            // SAFETY: the arrays have nParams = 2 entries and, with the buffers they point to,
            // live until PQsendQueryPrepared returns (libpq copies them into its output buffer).
            if unsafe {
                pq_sys::PQsendQueryPrepared(
                    pq.0,
                    name.as_ptr(),
                    2,
                    values.as_ptr(),
                    lengths.as_ptr(),
                    formats.as_ptr(),
                    1,
                )
            } != 1
            {
                return Err(pq.error());
            }
        }
        // SAFETY: live connection in pipeline mode.
        if unsafe { pq_sys::PQpipelineSync(pq.0) } != 1 {
            return Err(pq.error());
        }
        for _ in i..end {
            pq.next_result(&[PGRES_COMMAND_OK])?;
            if pq.next_result(&[])?.is_some() {
                return Err("pipeline: unexpected extra result".into());
            }
        }
        pq.next_result(&[PGRES_PIPELINE_SYNC])?;
        i = end;
    }
    // SAFETY: live connection, all results consumed.
    if unsafe { pq_sys::PQexitPipelineMode(pq.0) } != 1 {
        return Err(pq.error());
    }
    pq.exec("DEALLOCATE ins", PGRES_COMMAND_OK)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dsn = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "host=127.0.0.1 port=5432 user=root dbname=test".into());
    let n: u64 = args
        .get(2)
        .map_or(Ok(100_000), |s| s.parse())
        .map_err(|e| format!("N: {e}"))?;
    let runs: usize = args
        .get(3)
        .map_or(Ok(3), |s| s.parse())
        .map_err(|e| format!("RUNS: {e}"))?;
    let schema = format!("hookwire_bench_{}", std::process::id());

    println!("threads before connecting: {}", threads());
    let mut c = Client::connect(&dsn, NoTls).map_err(|e| e.to_string())?;
    println!("threads with a postgres::Client: {}", threads());
    let pq = Pq::connect(&dsn)?;
    c.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.events (seq bigserial PRIMARY KEY, endpoint int NOT NULL, payload bytea NOT NULL);
         CREATE TABLE {schema}.cursors (endpoint int PRIMARY KEY, seq bigint NOT NULL);
         INSERT INTO {schema}.cursors VALUES (0, 0);"
    ))
    .map_err(|e| e.to_string())?;
    let result = measure(&mut c, &pq, &schema, n, runs);
    let dropped = c
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .map_err(|e| e.to_string());
    result.and(dropped)
}

type Method<'a> = (&'a str, Box<dyn Fn(&mut Client, &Pq) -> Res<()> + 'a>);

fn measure(c: &mut Client, pq: &Pq, schema: &str, n: u64, runs: usize) -> Res<()> {
    for setting in ["synchronous_commit", "fsync", "server_version"] {
        let row = c
            .query_one(&format!("SHOW {setting}"), &[])
            .map_err(|e| e.to_string())?;
        let v: String = row.get(0);
        println!("{setting} = {v}");
    }
    println!("N = {n} events of {PAYLOAD} bytes, {runs} runs, schema {schema}");
    let methods: Vec<Method> = vec![
        (
            "postgres UNNEST insert, batch 100",
            Box::new(|c, _| pg_unnest(c, schema, n, 100)),
        ),
        (
            "postgres UNNEST insert, batch 1000",
            Box::new(|c, _| pg_unnest(c, schema, n, 1000)),
        ),
        (
            "postgres COPY BINARY, 1000 rows/COPY",
            Box::new(|c, _| pg_copy_binary(c, schema, n, 1000)),
        ),
        (
            "postgres COPY BINARY, 10000 rows/COPY",
            Box::new(|c, _| pg_copy_binary(c, schema, n, 10_000)),
        ),
        (
            "libpq COPY text, 1000 rows/COPY",
            Box::new(|_, pq| pq_copy_text(pq, schema, n, 1000)),
        ),
        (
            "libpq COPY text, 10000 rows/COPY",
            Box::new(|_, pq| pq_copy_text(pq, schema, n, 10_000)),
        ),
        (
            "libpq COPY BINARY, 1000 rows/COPY",
            Box::new(|_, pq| pq_copy_binary(pq, schema, n, 1000)),
        ),
        (
            "libpq COPY BINARY, 10000 rows/COPY",
            Box::new(|_, pq| pq_copy_binary(pq, schema, n, 10_000)),
        ),
        (
            "libpq pipeline 1-row INSERT, sync/1000",
            Box::new(|_, pq| pq_pipeline(pq, schema, n, 1000)),
        ),
    ];
    for (name, f) in &methods {
        let mut rates = Vec::new();
        for _ in 0..runs {
            reset(c, schema)?;
            let t = Instant::now();
            f(c, pq)?;
            let s = t.elapsed().as_secs_f64();
            let got = count(c, schema)?;
            if got != n as i64 {
                return Err(format!("{name}: {got} rows, expected {n}"));
            }
            rates.push(n as f64 / s);
        }
        report(&format!("ingest: {name}"), &mut rates);
    }
    let mut rates = Vec::new();
    for _ in 0..runs {
        reset(c, schema)?;
        pg_unnest(c, schema, n, 1000)?;
        let t = Instant::now();
        let got = pg_deliver(c, schema)?;
        let s = t.elapsed().as_secs_f64();
        if got != n {
            return Err(format!("delivered {got}, expected {n}"));
        }
        rates.push(n as f64 / s);
    }
    report(
        "deliver: postgres read 100 by cursor + cursor UPDATE (autocommit)",
        &mut rates,
    );
    println!("threads at the end: {}", threads());
    Ok(())
}

fn report(name: &str, rates: &mut [f64]) {
    let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "{name}: median {:.0} events/s (runs: {})",
        median(rates),
        all.join(", ")
    );
    let _ = std::io::stdout().flush();
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-pg: {e}");
        std::process::exit(1);
    }
}
