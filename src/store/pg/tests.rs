//! Tests against a real PostgreSQL: `HOOKWIRE_PG_URL`, else
//! `host=127.0.0.1 port=5432 user=root dbname=test`. Each test works in a schema of its own,
//! dropped at its end. Without a database they print `SKIPPED: no PostgreSQL` and pass,
//! unless `HOOKWIRE_REQUIRE_PG=1`, which makes them fail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::*;
use crate::store::{DeadLetter, DeadLetterFilter, DeadLetterStore, Record, Store};
use crate::{Error, RawEvent};

fn url() -> String {
    std::env::var("HOOKWIRE_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=root dbname=test".into())
}

/// A schema of the test's own, dropped (with everything in it) when this goes.
struct TestDb {
    admin: Client,
    config: PgConfig,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.config.schema);
        if let Err(e) = self.admin.batch_execute(&sql) {
            eprintln!("could not drop schema {}: {e}", self.config.schema);
        }
    }
}

impl TestDb {
    fn open(&self) -> PgStore {
        PgStore::open(&self.config, None).expect("open")
    }

    fn count(&mut self, sql: &str) -> i64 {
        let sql = sql.replace("S.", &format!("\"{}\".", self.config.schema));
        self.admin.query_one(&sql, &[]).unwrap().get(0)
    }

    fn exec(&mut self, sql: &str) {
        let sql = sql.replace("S.", &format!("\"{}\".", self.config.schema));
        self.admin.batch_execute(&sql).unwrap();
    }
}

/// The test database, or `None` (after saying so) when there is none and it is not required.
fn db() -> Option<TestDb> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let admin = match Client::connect(&url(), NoTls) {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("HOOKWIRE_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("HOOKWIRE_REQUIRE_PG=1 but PostgreSQL cannot be reached: {e}");
            }
            eprintln!("SKIPPED: no PostgreSQL ({e})");
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "hookwire_t_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut config = PgConfig::new(url()).schema(schema);
    config.partition_events = 1024;
    Some(TestDb { admin, config })
}

macro_rules! db {
    () => {
        match db() {
            Some(db) => db,
            None => return,
        }
    };
}

/// Everything `read` gives from `from` to `until` (in pages of `max`), and where it ended.
fn read_all(
    r: &mut dyn crate::store::StoreReader,
    from: u64,
    until: u64,
    mask: u64,
    max: usize,
) -> (Vec<(u64, u64, Vec<u8>)>, u64) {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let before = out.len();
        let n = r
            .read(next, until, mask, max, &mut |rec: Record<'_>| {
                out.push((rec.seq, rec.mask, rec.payload.to_vec()))
            })
            .unwrap();
        assert!(n >= next, "read went back from {next} to {n}");
        next = n;
        if out.len() - before < max {
            return (out, next);
        }
    }
}

fn storage(e: &Error) -> bool {
    matches!(e, Error::Storage { .. })
}

#[test]
fn append_commit_and_read_back_by_mask() {
    let db = db!();
    let mut store = db.open();
    assert_eq!(store.recovery().next_seq, 1);
    assert_eq!(
        store.show("default_transaction_isolation"),
        "read committed"
    );
    assert_eq!(store.show("statement_timeout"), "30s");
    assert_eq!(store.show("idle_in_transaction_session_timeout"), "2s");
    assert_eq!(store.show("application_name"), "hookwire");
    assert_eq!((store.durable_through(), store.next_seq()), (0, 1));
    assert_eq!(store.commit().unwrap(), 0, "nothing appended");
    let masks = [1u64, 2, 1 << 63, 3];
    for i in 0..20u64 {
        let seq = store
            .append(masks[i as usize % 4], 1000 + i, format!("p{i}").as_bytes())
            .unwrap();
        assert_eq!(seq, i + 1);
    }
    assert_eq!(store.durable_through(), 0);
    assert_eq!(store.commit().unwrap(), 20);
    assert_eq!((store.durable_through(), store.next_seq()), (20, 21));
    assert_eq!(store.commit().unwrap(), 20);

    let mut r = store.reader().unwrap();
    let (got, next) = read_all(&mut *r, 1, 20, 1, 100);
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, vec![1, 4, 5, 8, 9, 12, 13, 16, 17, 20]);
    assert_eq!(got[0].2, b"p0");
    assert_eq!(next, 21);
    let (got, _) = read_all(&mut *r, 1, 20, 1 << 63, 100);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|g| g.1 == 1 << 63));

    // `max` reached: one past the last given.
    let mut n = 0;
    let next = r.read(1, 20, u64::MAX, 3, &mut |_| n += 1).unwrap();
    assert_eq!((n, next), (3, 4));
    // Past the head: it stops at the head (21), never skipping what is not committed yet.
    let next = r.read(15, u64::MAX, u64::MAX, 100, &mut |_| {}).unwrap();
    assert_eq!(next, 21);
    let next = r.read(30, 40, u64::MAX, 100, &mut |_| {}).unwrap();
    assert_eq!(next, 30);

    drop(store);
    let store = db.open();
    let rec = store.recovery();
    assert_eq!((rec.first_seq, rec.next_seq, rec.records), (1, 21, 20));
    assert_eq!(store.durable_through(), 20);
    assert!(store.used_bytes() > 0);
    assert_eq!(store.quota_bytes(), u64::MAX);
    assert!(store.retries_failures() && store.shared());
}

#[test]
fn two_nodes_commit_in_one_gap_free_order() {
    let db = db!();
    const GROUPS: u64 = 40;
    let stores = [db.open(), db.open()];
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut r = stores[0].reader().unwrap();
        let done = done.clone();
        std::thread::spawn(move || {
            // Polls the log: every read must continue exactly where the last one ended
            // (what is seen is always 1..=max, with no gap to be filled later).
            let mut expected = 1u64;
            let mut polls = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                loop {
                    let mut seqs = Vec::new();
                    let next = r
                        .read(expected, u64::MAX, u64::MAX, 500, &mut |rec| {
                            seqs.push(rec.seq)
                        })
                        .unwrap();
                    for s in &seqs {
                        assert_eq!(*s, expected, "a gap before {s}");
                        expected += 1;
                    }
                    assert_eq!(next, expected, "the reader passed a seq it did not see");
                    polls += 1;
                    if seqs.len() < 500 {
                        break;
                    }
                }
                if finished {
                    return (expected - 1, polls);
                }
            }
        })
    };
    let writers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(node, mut store)| {
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for g in 0..GROUPS {
                    let n = 1 + (g * 7 + node as u64 * 3) % 50;
                    let first = store.append(1, 0, &[node as u8]).unwrap();
                    mine.push(first);
                    for k in 1..n {
                        let seq = store.append(1, 0, &[node as u8]).unwrap();
                        assert_eq!(seq, first + k, "a group's seqs are contiguous");
                        mine.push(seq);
                    }
                    assert_eq!(store.commit().unwrap(), first + n - 1);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, Ordering::Release);
    let (seen, polls) = reader.join().unwrap();
    all.sort_unstable();
    let total = all.len() as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "unique, no gap");
    assert_eq!(seen, total);
    eprintln!(
        "two nodes: {total} events in {} groups, {polls} reads",
        2 * GROUPS
    );
    let mut db = db;
    assert_eq!(db.count("SELECT count(*) FROM S.events"), total as i64);
    assert_eq!(db.count("SELECT next_seq FROM S.meta"), total as i64 + 1);
}

#[test]
fn nodes_agree_on_endpoint_slots() {
    let db = db!();
    let names: Vec<String> = (0..12).map(|i| format!("ep{i}")).collect();
    let threads: Vec<_> = (0..2)
        .map(|node| {
            let mut store = db.open();
            let mut names = names.clone();
            if node == 1 {
                names.reverse();
            }
            std::thread::spawn(move || {
                for n in &names {
                    store.endpoint(n).unwrap();
                }
                store
            })
        })
        .collect();
    let mut stores: Vec<PgStore> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let views: Vec<Vec<(String, u8)>> = stores
        .iter_mut()
        .map(|s| {
            names
                .iter()
                .map(|n| (n.clone(), s.endpoint(n).unwrap().slot))
                .collect()
        })
        .collect();
    assert_eq!(views[0], views[1]);
    let slots: BTreeSet<u8> = views[0].iter().map(|v| v.1).collect();
    assert_eq!(slots, (0..12).collect(), "the lowest slots, each once");
    assert_eq!(stores[0].endpoints().len(), 12);

    // Forgetting frees the slot (and the lease row) for the next registration.
    let st = stores[0].endpoint("ep3").unwrap();
    assert_eq!(stores[1].forget("ep3").unwrap(), Some(st));
    assert_eq!(stores[1].forget("ep3").unwrap(), None);
    let mut db = db;
    assert_eq!(
        db.count("SELECT count(*) FROM S.leases WHERE endpoint = 'ep3'"),
        0
    );
    stores[0].append(1, 0, b"x").unwrap();
    stores[0].commit().unwrap();
    let new = stores[0].endpoint("new").unwrap();
    assert_eq!(new.slot, st.slot);
    assert_eq!((new.since, new.acked), (2, 2), "starts at the head");

    // 64 at most.
    for i in 0..64 {
        match stores[1].endpoint(&format!("more{i}")) {
            Ok(_) => {}
            Err(Error::TooManyEndpoints {
                limit: 64,
                durable: true,
            }) => {
                assert_eq!(i, 64 - 12, "fails only when all 64 slots are taken");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("a 65th endpoint was registered");
}

#[test]
fn fenced_cursors_move_only_under_a_held_lease() {
    let mut db = db!();
    let fence = Fence::new("node-a");
    let mut store = PgStore::open(&db.config, Some(fence.clone())).unwrap();
    let names = ["held", "other", "expired", "stale_epoch", "not_held"];
    let slots: Vec<u8> = names
        .iter()
        .map(|n| store.endpoint(n).unwrap().slot)
        .collect();
    for i in 0..100 {
        store.append(1, i, b"e").unwrap();
    }
    store.commit().unwrap();
    db.exec(
        "UPDATE S.leases SET owner = 'node-a', epoch = 3, expires_at = now() + interval '1 minute' WHERE endpoint = 'held';
         UPDATE S.leases SET owner = 'node-b', epoch = 4, expires_at = now() + interval '1 minute' WHERE endpoint = 'other';
         UPDATE S.leases SET owner = 'node-a', epoch = 2, expires_at = now() - interval '1 second' WHERE endpoint = 'expired';
         UPDATE S.leases SET owner = 'node-a', epoch = 7, expires_at = now() + interval '1 minute' WHERE endpoint = 'stale_epoch';
         UPDATE S.leases SET owner = 'node-a', epoch = 1, expires_at = now() + interval '1 minute' WHERE endpoint = 'not_held';",
    );
    fence.set("held", Some(3));
    fence.set("other", Some(4)); // We think we hold it; the database says node-b does.
    fence.set("expired", Some(2));
    fence.set("stale_epoch", Some(6)); // Lost it and someone (even we) took it again.
    let acked: Vec<(u8, u64)> = slots.iter().map(|&s| (s, 50)).collect();
    store.save_cursors(&acked).unwrap();
    let now: Vec<(String, u64)> = store
        .endpoints()
        .into_iter()
        .map(|(n, st)| (n, st.acked))
        .collect();
    for (n, acked) in &now {
        let want = if n == "held" { 50 } else { 1 };
        assert_eq!(*acked, want, "{n}");
    }
    assert_eq!(
        db.count("SELECT acked FROM S.endpoints WHERE name = 'held'"),
        50
    );
    // Never back, never past the head (101).
    store.save_cursors(&[(slots[0], 20)]).unwrap();
    assert_eq!(
        db.count("SELECT acked FROM S.endpoints WHERE name = 'held'"),
        50
    );
    store.save_cursors(&[(slots[0], 5000)]).unwrap();
    assert_eq!(
        db.count("SELECT acked FROM S.endpoints WHERE name = 'held'"),
        101
    );
    // Released: no longer saved.
    fence.set("held", None);
    db.exec("UPDATE S.endpoints SET acked = 60 WHERE name = 'held'");
    store.save_cursors(&[(slots[0], 90)]).unwrap();
    assert_eq!(
        db.count("SELECT acked FROM S.endpoints WHERE name = 'held'"),
        60
    );
    drop(store);

    // Without a fence every cursor moves.
    let mut store = db.open();
    let acked: Vec<(u8, u64)> = slots.iter().map(|&s| (s, 70)).collect();
    store.save_cursors(&acked).unwrap();
    assert!(store.endpoints().iter().all(|(_, st)| st.acked == 70));
    // Unknown slots are ignored.
    store.save_cursors(&[(63, 80)]).unwrap();
}

#[test]
fn whole_partitions_go_once_every_endpoint_passed_them() {
    let mut db = db!();
    let mut store = db.open();
    let a = store.endpoint("a").unwrap();
    let b = store.endpoint("b").unwrap();
    for g in 0..10 {
        for i in 0..500 {
            store
                .append(1 << a.slot | 1 << b.slot, g * 500 + i, b"x")
                .unwrap();
        }
        store.commit().unwrap();
    }
    // 5000 events and one partition ahead: 1..1025 .. 5121..6145.
    let parts = |db: &mut TestDb| {
        db.count(&format!(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = '\"{}\".events'::regclass",
            db.config.schema
        ))
    };
    assert_eq!(parts(&mut db), 6);
    store.save_cursors(&[(a.slot, 3000)]).unwrap();
    assert_eq!(parts(&mut db), 6, "b has not passed anything yet");
    let used = store.used_bytes();
    assert_eq!(store.first_seq(), 1);
    store.save_cursors(&[(b.slot, 4000)]).unwrap();
    // min acked 3000: 1..1025 and 1025..2049 go; 2049..3073 holds 2049..3000.
    assert_eq!(parts(&mut db), 4);
    assert_eq!(store.first_seq(), 2049);
    assert_eq!(db.count("SELECT first_seq FROM S.meta"), 2049);
    assert!(store.used_bytes() < used);
    let mut r = store.reader().unwrap();
    let (got, next) = read_all(&mut *r, 1, 5000, u64::MAX, 1000);
    assert_eq!(got.first().map(|g| g.0), Some(2049));
    assert_eq!(got.len(), 5000 - 2048);
    assert_eq!(next, 5001);
    // Writing goes on, into new partitions.
    for _ in 0..1500 {
        store.append(1, 0, b"y").unwrap();
    }
    assert_eq!(store.commit().unwrap(), 6500);
    // Everyone passed everything: only the partition holding the head (and the one after).
    store
        .save_cursors(&[(a.slot, 6501), (b.slot, 6501)])
        .unwrap();
    assert_eq!(store.first_seq(), 6145);
    let (got, next) = read_all(&mut *r, 1, 6500, u64::MAX, 1000);
    assert_eq!(got.first().map(|g| g.0), Some(6145));
    assert_eq!(next, 6501);
    drop(store);
    let store = db.open();
    assert_eq!(store.recovery().first_seq, 6145);
    assert_eq!(store.recovery().next_seq, 6501);
}

#[test]
fn a_failed_commit_writes_nothing_and_the_next_one_reconnects() {
    let mut db = db!();
    let mut store = db.open();
    store.append(1, 0, b"kept").unwrap();
    assert_eq!(store.commit().unwrap(), 1);
    for _ in 0..5 {
        store.append(1, 0, b"lost").unwrap();
    }
    let pid = store.backend_pid();
    db.admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .unwrap();
    let e = store.commit().unwrap_err();
    assert!(storage(&e), "{e}");
    assert_eq!(store.durable_through(), 1);
    assert_eq!(store.next_seq(), 2, "the group's seqs are given again");
    assert_eq!(db.count("SELECT count(*) FROM S.events"), 1);
    for i in 0..3 {
        assert_eq!(store.append(1, 0, b"again").unwrap(), 2 + i);
    }
    assert_eq!(store.commit().unwrap(), 4);
    assert_eq!(db.count("SELECT count(*) FROM S.events"), 4);

    // A connection lost between groups: the append fails, the next one reconnects.
    let pid = store.backend_pid();
    db.admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .unwrap();
    let e = store.append(1, 0, b"z").unwrap_err();
    assert!(storage(&e), "{e}");
    assert_eq!(store.append(1, 0, b"z").unwrap(), 5);
    assert_eq!(store.commit().unwrap(), 5);

    // A reader reconnects too.
    let mut r = store.reader().unwrap();
    assert_eq!(read_all(&mut *r, 1, 5, 1, 100).0.len(), 5);
    let pid: i32 = db
        .admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'hookwire' \
             AND pid <> $1 AND query LIKE '%LATERAL%' AND query LIKE $2",
            &[&pid, &format!("%\"{}\"%", db.config.schema)],
        )
        .unwrap()
        .get(0);
    db.admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .unwrap();
    assert!(storage(&r.read(1, 5, 1, 100, &mut |_| {}).unwrap_err()));
    assert_eq!(read_all(&mut *r, 1, 5, 1, 100).0.len(), 5);
}

#[test]
fn a_node_stalled_in_a_group_loses_the_head_lock() {
    let db = db!();
    let mut config = db.config.clone();
    config.statement_timeout = Duration::from_millis(800);
    let mut stalled = PgStore::open(&config, None).unwrap();
    let mut other = PgStore::open(&config, None).unwrap();
    assert_eq!(stalled.append(1, 0, b"a").unwrap(), 1);
    // `stalled` holds the head lock and does nothing: after the idle-in-transaction timeout
    // the server ends its session, and `other` commits.
    let started = Instant::now();
    assert_eq!(other.append(1, 0, b"b").unwrap(), 1);
    assert_eq!(other.commit().unwrap(), 1);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let e = stalled.commit().unwrap_err();
    assert!(storage(&e), "{e}");
    assert!(
        e.to_string().contains("idle"),
        "the server's reason is kept: {e}"
    );
    assert_eq!(stalled.append(1, 0, b"c").unwrap(), 2);
    assert_eq!(stalled.commit().unwrap(), 2);
}

fn letter(endpoint: &str, seq: u64) -> DeadLetter {
    let id = format!("ev{seq}");
    DeadLetter {
        endpoint: endpoint.into(),
        seq,
        published_ms: 1000 + seq,
        failed_ms: 2000 + seq,
        status: seq.is_multiple_of(2).then_some(500),
        error: format!("failed {seq}"),
        attempts: 3,
        event: RawEvent::new(id.clone(), format!(r#"{{"id":"{id}","n":{seq}}}"#)).unwrap(),
    }
}

#[test]
fn dead_letters_are_kept_scanned_and_taken() {
    let db = db!();
    let store = db.open();
    let dl = store.dead_letters();
    dl.append(&[letter("a", 1), letter("b", 2), letter("a", 3)])
        .unwrap();
    dl.append(&[]).unwrap();
    let all = dl.list(&DeadLetterFilter::all()).unwrap();
    let keys: Vec<(String, u64)> = all.iter().map(|d| (d.endpoint.clone(), d.seq)).collect();
    assert_eq!(
        keys,
        vec![("a".into(), 1), ("b".into(), 2), ("a".into(), 3)]
    );
    let d = &all[1];
    assert_eq!(
        (d.published_ms, d.failed_ms, d.status, d.attempts),
        (1002, 2002, Some(500), 3)
    );
    assert_eq!(d.error, "failed 2");
    assert_eq!(d.event.json(), r#"{"id":"ev2","n":2}"#);
    assert_eq!(all[0].status, None);

    let only_a = DeadLetterFilter {
        endpoint: Some("a".into()),
        ..DeadLetterFilter::all()
    };
    assert_eq!(dl.list(&only_a).unwrap().len(), 2);
    let seqs = DeadLetterFilter {
        seqs: Some((2, 3)),
        ..DeadLetterFilter::all()
    };
    assert_eq!(dl.list(&seqs).unwrap().len(), 2);
    let failed = DeadLetterFilter {
        failed_ms: Some((2003, 2003)),
        ..DeadLetterFilter::all()
    };
    assert_eq!(dl.list(&failed).unwrap()[0].seq, 3);

    // An error from `each` keeps the chunk.
    let e = dl
        .take_each(&|d| d.endpoint == "a", &mut |_| {
            Err(Error::Encode {
                message: "no".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(e, Error::Encode { .. }));
    assert_eq!(dl.list(&DeadLetterFilter::all()).unwrap().len(), 3);
    let mut handed = Vec::new();
    let taken = dl
        .take_each(&|d| d.endpoint == "a", &mut |chunk| {
            handed.extend(chunk.into_iter().map(|d| d.seq));
            Ok(())
        })
        .unwrap();
    assert_eq!((taken, handed), (2, vec![1, 3]));
    let left = dl.take(&DeadLetterFilter::all()).unwrap();
    assert_eq!(left.len(), 1);
    assert!(dl.list(&DeadLetterFilter::all()).unwrap().is_empty());
    assert!(dl.used_bytes() > 0);
    assert_eq!(dl.cap_bytes(), db.config.dead_letter_bytes);

    // Past the cap: nothing is written.
    let mut small = db.config.clone();
    small.dead_letter_bytes = dl.used_bytes() + 10;
    let dl = PgDeadLetters::new(small);
    let e = dl.append(&[letter("a", 9)]).unwrap_err();
    assert!(matches!(e, Error::DeadLettersFull { .. }), "{e}");
    assert!(dl.list(&DeadLetterFilter::all()).unwrap().is_empty());
}

#[test]
fn dead_letters_are_taken_a_page_at_a_time() {
    let db = db!();
    let store = db.open();
    let dl = store.dead_letters();
    let letters: Vec<DeadLetter> = (1..=2500).map(|s| letter("a", s)).collect();
    dl.append(&letters).unwrap();
    let mut seen = 0;
    assert_eq!(
        dl.scan(&DeadLetterFilter::all(), &mut |_| {
            seen += 1;
            Ok(())
        })
        .unwrap(),
        0
    );
    assert_eq!(seen, 2500);
    let mut chunks = Vec::new();
    let mut calls = 0;
    // The second chunk fails: the first stays taken, the rest stay.
    let e = dl.take_each(&|d| d.seq.is_multiple_of(2), &mut |chunk| {
        calls += 1;
        chunks.push(chunk.len());
        if calls == 2 {
            return Err(Error::Closed);
        }
        Ok(())
    });
    assert!(matches!(e, Err(Error::Closed)));
    assert_eq!(chunks, vec![500, 500]);
    assert_eq!(dl.list(&DeadLetterFilter::all()).unwrap().len(), 2000);
}

#[test]
fn the_outbox_has_an_event_exactly_when_its_transaction_commits() {
    let mut db = db!();
    drop(db.open()); // Creates the tables.
    let schema = db.config.schema.clone();
    let event = RawEvent::new("o1", r#"{"id":"o1","x":[1,2]}"#).unwrap();
    let mut tx = db.admin.transaction().unwrap();
    insert_outbox(&mut tx, &schema, &event).unwrap();
    tx.rollback().unwrap();
    assert!(fetch_outbox(&mut db.admin, &schema, 10).unwrap().is_empty());
    let mut tx = db.admin.transaction().unwrap();
    insert_outbox(&mut tx, &schema, &event).unwrap();
    // Not visible to others before the commit.
    let mut other = Client::connect(&url(), NoTls).unwrap();
    assert!(fetch_outbox(&mut other, &schema, 10).unwrap().is_empty());
    tx.commit().unwrap();
    let rows = fetch_outbox(&mut other, &schema, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, event.json());
    delete_outbox(&mut other, &schema, &[rows[0].0]).unwrap();
    assert!(fetch_outbox(&mut other, &schema, 10).unwrap().is_empty());

    assert_eq!(
        outbox_insert_sql("hw").unwrap(),
        r#"INSERT INTO "hw".outbox (event) VALUES ($1::text::json)"#
    );
    assert!(matches!(
        insert_outbox(&mut other, "bad\"name", &event),
        Err(Error::Config { .. })
    ));
}

#[test]
fn migration_is_shared_and_refuses_a_newer_version() {
    let mut db = db!();
    // Nodes starting together: one creates, the others find it done.
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let config = db.config.clone();
            std::thread::spawn(move || PgStore::open(&config, None).map(|_| ()))
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    assert_eq!(db.count("SELECT version::bigint FROM S.meta"), 1);
    db.exec("UPDATE S.meta SET version = 2");
    match PgStore::open(&db.config, None) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "schema");
            assert!(reason.contains("version 2"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_is_validated_and_passwords_never_shown() {
    let ok = PgConfig::new("host=x");
    ok.validate().unwrap();
    for bad in [
        "",
        "Upper",
        "9lives",
        "with-dash",
        "quo\"te",
        &"x".repeat(64),
    ] {
        let e = ok.clone().schema(bad).validate().unwrap_err();
        assert!(
            matches!(
                e,
                Error::Config {
                    field: "schema",
                    ..
                }
            ),
            "{bad:?}"
        );
    }
    ok.clone().schema("a_1").validate().unwrap();
    let mut small = ok.clone();
    small.partition_events = 1000;
    assert!(small.validate().is_err());

    assert_eq!(
        PgConfig::new("postgres://u:secret@h:5432/db").redacted(),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(
        PgConfig::new("postgresql://u@h/db").redacted(),
        "postgresql://u@h/db"
    );
    assert_eq!(
        PgConfig::new("host=h password=secret user=u").redacted(),
        "host=h password=*** user=u"
    );
    assert_eq!(
        PgConfig::new("host = h  password = 'se cr\\'et' application_name='a b'").redacted(),
        "host=h password=*** application_name='a b'"
    );
    assert_eq!(
        PgConfig::new("postgres://u:p@ss@h/db?sslmode=disable&password=secret").redacted(),
        "postgres://u:***@h/db?sslmode=disable&password=***"
    );
    assert!(
        !PgConfig::new("host=h password='unterminated")
            .redacted()
            .contains("unterm")
    );

    // A database that cannot be reached: a storage error that does not show the password.
    let mut config = PgConfig::new("postgres://root:sekrit@127.0.0.1:1/test");
    config.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let e = PgStore::open(&config, None).unwrap_err();
    assert!(storage(&e), "{e}");
    assert!(!e.to_string().contains("sekrit"), "{e}");
    assert!(e.to_string().contains("***"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Not a benchmark (debug build, shared machine): a rough ingest rate, printed.
#[test]
fn ingest_rate_through_pg_store() {
    let db = db!();
    let mut config = db.config.clone();
    config.partition_events = 1 << 20;
    config.schema.push_str("_rate");
    let _drop = TestDb {
        admin: Client::connect(&url(), NoTls).unwrap(),
        config: config.clone(),
    };
    let mut store = PgStore::open(&config, None).unwrap();
    let payload = vec![b'x'; 300];
    let started = Instant::now();
    for _ in 0..100 {
        for _ in 0..1000 {
            store.append(1, 0, &payload).unwrap();
        }
        store.commit().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(store.durable_through(), 100_000);
    eprintln!(
        "PgStore ingest: 100000 events of 300 bytes in groups of 1000: {secs:.2} s, {:.0} events/s",
        100_000.0 / secs
    );
}

/// Issue 12: two lease managers on one schema share three endpoints by their fair share
/// (ceil(3 / 2)): the first takes all three alone, gives one back when the second node
/// appears (revoked in its engine first, freed in the database a round later), and takes it
/// again at a new epoch when the second stops. Gates never stay open past half a lease from
/// the round that renewed them. (The waits poll the real database: bounded, not timed.)
#[test]
fn lease_managers_share_endpoints_by_fair_share_and_hand_them_over() {
    let db = db!();
    let ttl = Duration::from_secs(1);
    let mut store = PgStore::open(&db.config, Some(Fence::new("n1"))).unwrap();
    for name in ["a", "b", "c"] {
        store.endpoint(name).unwrap();
    }
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let board = || {
        Arc::new(crate::engine::LeaseBoard::new(Arc::new(
            crate::engine::endpoint::LogMarks::at(0),
        )))
    };
    let start = |node: &str, board: &Arc<crate::engine::LeaseBoard>, fence: &Arc<Fence>| {
        let mut options = LeaseOptions::new(node);
        options.ttl = ttl;
        LeaseManager::start(
            &db.config,
            &options,
            board.clone(),
            fence.clone(),
            names.clone(),
        )
        .unwrap()
    };
    let held = |b: &crate::engine::LeaseBoard| -> Vec<&str> {
        ["a", "b", "c"]
            .into_iter()
            .filter(|n| b.held(n, Instant::now()).is_some())
            .collect()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (b1, f1) = (board(), Fence::new("n1"));
    let m1 = start("n1", &b1, &f1);
    assert_eq!(
        held(&b1),
        ["a", "b", "c"],
        "alone: all three, from the first round"
    );
    assert_eq!(f1.epoch("c"), Some(1));
    let until = b1.gate("a").get().until.unwrap();
    assert!(
        until <= Instant::now() + ttl / 2,
        "the gate lapses within half a lease"
    );
    let (b2, f2) = (board(), Fence::new("n2"));
    let m2 = start("n2", &b2, &f2);
    wait("n1 to give one back and n2 to take it", &|| {
        held(&b1) == ["a", "b"] && held(&b2) == ["c"]
    });
    assert_eq!(f1.epoch("c"), None, "n1's cursor saves no longer touch c");
    assert_eq!(f2.epoch("c"), Some(2), "a new holder, a new epoch");
    let view = m2.view();
    assert!(view.healthy && view.nodes == ["n1", "n2"], "{view:?}");
    assert_eq!(view.held, ["c"]);
    m2.stop();
    assert!(held(&b2).is_empty(), "a stopped node holds nothing");
    wait("n1 to take c back", &|| held(&b1) == ["a", "b", "c"]);
    assert_eq!(f1.epoch("c"), Some(3));
    drop(m1);
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM S.leases WHERE owner IS NOT NULL"),
        0,
        "a clean stop frees every lease"
    );
}

fn db_count(db: &TestDb, sql: &str) -> i64 {
    let mut c = Client::connect(&url(), NoTls).unwrap();
    let sql = sql.replace("S.", &format!("\"{}\".", db.config.schema));
    c.query_one(&sql, &[]).unwrap().get(0)
}

/// Issue 12: forgetting an endpoint of a schema shared by several nodes (a store with a
/// fence) retires its slot: the endpoint is gone (it no longer holds old partitions back),
/// but its slot is never given to another endpoint, since a node that still has it
/// configured may go on writing its bit. Without a fence (one node) the slot is reused.
#[test]
fn forgetting_a_shared_endpoint_retires_its_slot() {
    let db = db!();
    let mut shared = PgStore::open(&db.config, Some(Fence::new("n1"))).unwrap();
    let a = shared.endpoint("a").unwrap();
    let b = shared.endpoint("b").unwrap();
    assert_eq!((a.slot, b.slot), (0, 1));
    assert_eq!(shared.forget("a").unwrap().map(|s| s.slot), Some(0));
    assert!(shared.endpoints().iter().all(|(n, _)| n != "a"));
    let c = shared.endpoint("c").unwrap();
    assert_eq!(c.slot, 2, "slot 0 is retired, not reused");
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM S.retired_slots WHERE slot = 0"),
        1
    );
    drop(shared);
    // One node alone (no fence): a forgotten slot is free again.
    let mut alone = PgStore::open(&db.config, None).unwrap();
    alone.forget("c").unwrap();
    assert_eq!(alone.endpoint("d").unwrap().slot, 2);
}
