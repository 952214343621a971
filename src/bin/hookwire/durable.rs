//! `hookwire send --data-dir DIR` (durable delivery) and `hookwire send --data-dir DIR --resume`.
//!
//! With a data directory every endpoint is durable: an event is written to the log in DIR
//! (fsynced, in groups) before it is delivered, and whatever is not delivered when `send`
//! stops (a crash included) stays there for `--resume`. stdout is NDJSON: a
//! `{"durable_through": N}` line each time the first N events read are all on disk, then the
//! summary on one line.
//!
//! stdin is read on its own thread and handed over a channel (`input.rs`), so that progress
//! is printed while stdin is idle too: the main thread polls the tickets of the events
//! published, in input order, every [`POLL`] and after each line.
//!
//! What opening the directory found and repaired (a torn tail cut, damaged ranges skipped,
//! cursor and slot files lost or repaired) is said on stderr before anything is sent, and
//! damage the endpoints met later (in older segments) after the run; both are in the
//! summary (`recovery`, `damage`). Records lost to damage make the exit code
//! [`EXIT_DAMAGED`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hookwire::endpoint::EndpointConfig;
use hookwire::engine::{Dispatcher, Ticket};
use hookwire::stats::DropReason;
use hookwire::store::{self, Damage, DamageKind, Recovery};
use hookwire::{Error, RawEvent};

use crate::input::{Input, POLL};
use crate::options::{endpoint_configs, flagged};
use crate::progress::Meter;
use crate::saved::Saved;
use crate::send::{SendArgs, drain, exit_code, read_input};
use crate::signals;
use crate::summary::{Pumped, Summary};

/// The longest a publish waits for room in the log's intake (the disk is behind): reading
/// stdin more slowly is the right back-pressure, failing the event is not.
const MAX_PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// The exit code of a `send --data-dir` whose data directory was damaged: records in its log
/// could not be read and were skipped (copied to `DIR/quarantine`).
pub(crate) const EXIT_DAMAGED: u8 = 3;

/// `hookwire send --data-dir DIR [--resume]`.
pub(crate) fn main(args: &SendArgs, dir: &Path) -> Result<ExitCode, Error> {
    if args.overflow.is_some() {
        return Err(Error::config(
            "--overflow",
            "cannot be used with --data-dir: a durable endpoint keeps its backlog on disk \
             (--capacity still bounds what it holds in memory)",
        ));
    }
    // A resume needs the saved settings; a new run only compares names with them (and then
    // replaces them), so an unreadable file does not stop it.
    let saved = match (dir.exists(), args.resume) {
        (false, _) => None,
        (true, true) => Saved::load(dir)?,
        (true, false) => Saved::load(dir).ok().flatten(),
    };
    let args = if args.resume {
        resume_args(args, dir, saved.as_ref())?
    } else {
        args.clone()
    };
    signals::install()?;
    let configs = durable_configs(&args)?;
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let mut store = store::StoreConfig::new(dir);
    if let Some(cap) = args.dead_letter_cap {
        store.dead_letter_bytes = cap;
    }
    let mut builder = Dispatcher::builder()
        .publish_timeout(timeout.min(MAX_PUBLISH_WAIT))
        .store_config(store);
    if let Some(w) = args.workers {
        builder = builder.workers(w);
    }
    // Damage found during the run is what the quarantine holds afterwards and did not before.
    let quarantined_before = store::quarantined(dir).unwrap_or_default();
    let d = builder.build().map_err(|e| in_use(flagged(e)))?;
    let recovery = d.recovery().unwrap_or_default();
    report_recovery(dir, &recovery, &mut io::stderr());
    // Checked before any is added: a run that cannot have all its endpoints takes no slot.
    check_slots(&d, &names, dir)?;
    for c in configs {
        d.add_endpoint(c).map_err(flagged)?;
    }
    // Saved once the store is ours (its lock is held) and the endpoints were accepted.
    if let Some(old) = &saved {
        warn_left_behind(old, &names, dir);
    }
    Saved::new(&args, &names)
        .keeping(saved.as_ref())
        .save(dir)?;
    let mut progress_out = io::stdout();
    let meter = Meter::for_stderr();
    // --timeout is the drain deadline: it starts when the input ends (a resume reads none).
    let (pumped, progress, deadline) = if args.resume {
        (Pumped::default(), None, Instant::now() + timeout)
    } else {
        let (pumped, mut progress) = read_and_publish(
            &d,
            !args.secrets.is_empty(),
            timeout,
            &mut progress_out,
            &meter,
        )?;
        let deadline = Instant::now() + timeout;
        progress.finish(deadline);
        (pumped, Some(progress), deadline)
    };
    let idle = drain(&d, deadline, &meter);
    meter.finish();
    let report = d.shutdown(Duration::from_secs(1));
    let mut summary = Summary::new(
        &pumped,
        idle && report.drained,
        start.elapsed(),
        report.endpoints,
    );
    summary.kept = report.kept;
    summary.durable = true;
    summary.signal = signals::received().map(signals::Signal::name);
    let found = damage_found(dir, &recovery, &quarantined_before, &mut io::stderr());
    let lost = summary.dropped.get(DropReason::Corrupt.as_str()).copied();
    summary.data_damaged = lost.unwrap_or(0) > 0 || found.iter().any(|(_, new)| *new);
    summary.damage = found.into_iter().map(|(d, _)| d).collect();
    report_lost(&summary.endpoints, dir, &mut io::stderr());
    summary.recovery = Some(recovery);
    if let Some(mut p) = progress {
        // Shutdown settled every ticket: committed, or refused (counted as not durable).
        p.settle_all();
        summary.durable_through = Some(p.durable);
        summary.not_durable = Some(p.not_durable);
        summary.storage_error = p.store_error.take();
    }
    summary.report(&mut io::stderr());
    summary.write(&mut io::stdout().lock(), args.pretty)?;
    Ok(exit_code(&summary))
}

/// Says on `err` what opening the data directory `dir` found and repaired (nothing if it was
/// clean). Opened read-only (`dlq list`), it says what a writer would do.
pub(crate) fn report_recovery(dir: &Path, r: &Recovery, err: &mut dyn Write) {
    let d = dir.display();
    for damage in &r.damaged {
        report_damage(dir, damage, r.read_only, err);
    }
    if r.slots_lost {
        let _ = writeln!(
            err,
            "hookwire: warning: {d}/slots.json and cursors.json were missing or unreadable \
             while the log holds records {} to {}: endpoints resume from the oldest record, \
             each getting the records of the slot it takes (in the order they are added, as \
             before); events are redelivered",
            r.first_seq,
            r.next_seq.saturating_sub(1)
        );
    } else if r.cursors_reset {
        let _ = writeln!(
            err,
            "hookwire: warning: {d}/cursors.json was missing or unreadable: every endpoint \
             resumes from the oldest record it may have (events are redelivered)"
        );
    }
    if r.slots_rebuilt {
        let _ = writeln!(
            err,
            "hookwire: note: {d}/slots.json was missing or unreadable: rebuilt from \
             cursors.json"
        );
    }
    for c in &r.cursors_clamped {
        let why = if c.saved > c.now {
            "past the end of the log: records it had delivered are gone from it (a cut \
             tail, or a disk that lost synced writes)"
        } else {
            "before the oldest record in the log: records it had not delivered are gone \
             (segment files removed)"
        };
        let _ = writeln!(
            err,
            "hookwire: warning: the cursor of endpoint {} was at {}, {why}; it resumes at {}",
            c.endpoint, c.saved, c.now
        );
    }
    if r.dead_letters_skipped > 0 {
        let _ = writeln!(
            err,
            "hookwire: note: {} unreadable dead-letter line(s) skipped",
            r.dead_letters_skipped
        );
    }
}

/// One stderr line for a damaged range of `dir`'s log.
fn report_damage(dir: &Path, damage: &Damage, read_only: bool, err: &mut dyn Write) {
    let seg = dir
        .join("log")
        .join(format!("{:020}.seg", damage.segment))
        .display()
        .to_string();
    let copied = match (&damage.quarantined, read_only) {
        (Some(p), _) => format!("copied to {}", p.display()),
        (None, true) => "not copied yet: a writer copies it to the quarantine".into(),
        (None, false) => "it could not be copied to the quarantine".into(),
    };
    let _ = match damage.kind {
        DamageKind::Corrupt => writeln!(
            err,
            "hookwire: warning: {seg}: {} damaged bytes at byte {} ({}): {} lost; the records \
             after the damage are kept; {copied}",
            damage.bytes,
            damage.offset,
            damage.reason,
            match damage.lost {
                0 => "no record is".to_owned(),
                1 => format!("record {} is", damage.after_seq + 1),
                n => format!(
                    "{n} records, {} to {}, are",
                    damage.after_seq + 1,
                    damage.after_seq + n
                ),
            }
        ),
        DamageKind::TornTail => writeln!(
            err,
            "hookwire: note: {seg}: {} a torn tail of {} bytes at byte {} ({}: what a crash in \
             the middle of a write leaves{}); {copied}",
            if read_only {
                "a writer will cut"
            } else {
                "cut"
            },
            damage.bytes,
            damage.offset,
            damage.reason,
            if read_only {
                ", or a write still in progress"
            } else {
                ""
            },
        ),
        other => writeln!(
            err,
            "hookwire: warning: {seg}: {} damaged bytes at byte {} ({other:?}: {}); {copied}",
            damage.bytes, damage.offset, damage.reason
        ),
    };
}

/// Every damaged range this run found (at open, or when an endpoint read past it), each
/// with whether it was new (not in the quarantine before the run); the ones found after the
/// open are said on `err`.
fn damage_found(
    dir: &Path,
    at_open: &Recovery,
    before: &[Damage],
    err: &mut dyn Write,
) -> Vec<(Damage, bool)> {
    let known = |d: &Damage| {
        d.quarantined.is_some() && before.iter().any(|b| b.quarantined == d.quarantined)
    };
    let mut found: Vec<(Damage, bool)> = at_open
        .damaged
        .iter()
        .map(|d| (d.clone(), !known(d)))
        .collect();
    for d in store::quarantined(dir).unwrap_or_default() {
        let seen = known(&d)
            || at_open
                .damaged
                .iter()
                .any(|o| o.quarantined == d.quarantined);
        if !seen {
            report_damage(dir, &d, false, err);
            found.push((d, true));
        }
    }
    found
}

/// Says on `err` how many events each endpoint lost to damage, and how many of those it gave
/// up could not be kept in the full dead letters.
fn report_lost(endpoints: &[hookwire::stats::EndpointSnapshot], dir: &Path, err: &mut dyn Write) {
    for ep in endpoints {
        let n = ep
            .metrics
            .dropped
            .get(&DropReason::Corrupt)
            .copied()
            .unwrap_or(0);
        if n > 0 {
            let _ = writeln!(
                err,
                "hookwire: endpoint {}: {n} event(s) lost to damage in the log (counted in \
                 dropped.corrupt; the damaged bytes are in {})",
                ep.name,
                dir.join("quarantine").display()
            );
        }
        let refused = ep.metrics.dead_letter_errors;
        if refused > 0 {
            let _ = writeln!(
                err,
                "hookwire: endpoint {}: {refused} event(s) given up could not be kept in the \
                 dead letters of {} (full: replay or list them with `hookwire dlq`); counted \
                 in dead_lettered and dead_letter_errors",
                ep.name,
                dir.display()
            );
        }
    }
}

/// The options of a resume: what was given, the rest from `DIR/send.json`.
fn resume_args(args: &SendArgs, dir: &Path, saved: Option<&Saved>) -> Result<SendArgs, Error> {
    if !dir.is_dir() {
        return Err(Error::config(
            "--data-dir",
            format!("{} is not a directory: nothing to resume", dir.display()),
        ));
    }
    match saved {
        Some(s) => s.merge_into(args),
        None if args.endpoints.is_empty() => Err(Error::config(
            "--endpoint",
            format!(
                "{} has no {}: give the endpoints (and their --name) to resume",
                dir.display(),
                crate::saved::FILE
            ),
        )),
        None => Ok(args.clone()),
    }
}

/// `send`'s endpoint configs, made durable.
fn durable_configs(args: &SendArgs) -> Result<Vec<EndpointConfig>, Error> {
    Ok(endpoint_configs(args)?
        .into_iter()
        .map(EndpointConfig::durable)
        .collect())
}

/// Says so when the data directory's last run had endpoints this one does not have: their
/// undelivered events stay in the log.
fn warn_left_behind(old: &Saved, names: &[String], dir: &Path) {
    let missing = old.others(names);
    if !missing.is_empty() {
        eprintln!(
            "hookwire: note: not resumed now: endpoint(s) {0} saved in {1}; they stay saved, \
             and what they have not delivered stays in {1} (`--resume` delivers it, \
             `--resume --name NAME` one of them, or `hookwire forget` moves it to the dead \
             letters and frees the slot)",
            missing.join(", "),
            dir.display(),
        );
    }
}

/// Fails with [`Error::TooManyEndpoints`] if the store cannot take every endpoint of this
/// run (`names`) beside those it keeps, and says on stderr which it keeps that this run
/// does not use (`hookwire forget` frees them).
fn check_slots(d: &Dispatcher, names: &[String], dir: &Path) -> Result<(), Error> {
    let known = d.durable_endpoints()?;
    let new = names
        .iter()
        .filter(|n| !known.iter().any(|(k, _)| k == *n))
        .count();
    if known.len() + new <= store::SLOTS {
        return Ok(());
    }
    let idle: Vec<&str> = known
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !names.iter().any(|n| n == k))
        .collect();
    eprintln!(
        "hookwire: {} keeps {} durable endpoint(s) and this run adds {new}: at most {} fit; \
         endpoints this run does not use: {}; free them with `hookwire forget --data-dir {} \
         --endpoint NAME`",
        dir.display(),
        known.len(),
        store::SLOTS,
        if idle.is_empty() {
            "none".to_owned()
        } else {
            idle.join(", ")
        },
        dir.display()
    );
    Err(Error::TooManyEndpoints {
        limit: store::SLOTS,
        durable: true,
    })
}

/// Makes a locked data directory's error say why.
pub(crate) fn in_use(e: Error) -> Error {
    match e {
        Error::Storage {
            op: "lock",
            path,
            message,
            source,
        } => Error::Storage {
            op: "lock",
            path,
            message: format!("{message} (another hookwire process is using this data directory)"),
            source,
        },
        other => other,
    }
}

/// Reads stdin (on its own thread) and publishes every event with a ticket, printing
/// progress to `out` as it goes, also while stdin is idle. Returns at the end of stdin, or
/// when a signal stops the reading.
fn read_and_publish<'a>(
    d: &Dispatcher,
    signed: bool,
    timeout: Duration,
    out: &'a mut dyn Write,
    meter: &Meter,
) -> Result<(Pumped, Progress<'a, Ticket>), Error> {
    let mut input = Input::stdin(signed)?;
    let progress = RefCell::new(Progress::new(Box::new(out), Box::new(io::stderr())));
    // Once the store has failed nothing more can be persisted: reading stops there.
    let store_failed = || progress.borrow().store_error.is_some();
    let mut pumped = read_input(
        &mut input,
        &store_failed,
        &mut || {
            progress.borrow_mut().tick();
            meter.tick(d);
        },
        |n, ev: RawEvent| {
            let ticket = d.publish_with_ticket(ev).inspect_err(|e| {
                if matches!(e, Error::Storage { .. }) {
                    progress
                        .borrow_mut()
                        .store_error
                        .get_or_insert(e.to_string());
                }
            })?;
            let mut p = progress.borrow_mut();
            p.push(n, ticket);
            p.tick();
            meter.read_one(d);
            Ok(())
        },
    );
    let mut progress = progress.into_inner();
    if progress.store_error.is_some() && pumped.unread_from_line.is_none() {
        // The refusals first (every outcome comes at once now), then what was not read.
        progress.finish(Instant::now() + timeout);
        if let Some(n) = input.first_unread() {
            eprintln!(
                "line {n}: not read: the durable store failed (see above), so no more \
                 events can be persisted"
            );
            pumped.unread_from_line = Some(n);
        }
    }
    Ok((pumped, progress))
}

/// A published event's durability, as [`Progress`] asks for it ([`Ticket`], or a fake in
/// tests).
pub(crate) trait Outcome {
    /// `None` while undecided; `Ok` once on disk; the error if it will not be.
    fn outcome(&self) -> Option<Result<(), Error>>;
    /// Blocks until decided or `timeout` passes.
    fn wait_for(&self, timeout: Duration);
}

impl Outcome for Ticket {
    fn outcome(&self) -> Option<Result<(), Error>> {
        // Ok(None) (no durable endpoint wanted it) cannot happen with --data-dir, where every
        // endpoint is durable; it would mean there is nothing to persist.
        self.try_get().map(|r| r.map(|_| ()))
    }

    fn wait_for(&self, timeout: Duration) {
        let _ = self.wait(timeout);
    }
}

/// Which of the published events are durable, in input order, and the progress lines.
pub(crate) struct Progress<'a, T> {
    /// Events published and not yet decided, oldest first, with their input line.
    waiting: VecDeque<(u64, T)>,
    /// Events decided durable. Every event published before the last of them is decided.
    pub(crate) durable: u64,
    /// Events refused by the log after they were published (reported on stderr).
    pub(crate) not_durable: u64,
    /// The last `durable_through` printed.
    printed: Option<u64>,
    /// Refusals not said yet: a run of them with the same error is said in one line.
    refused: Option<Refused>,
    /// Why the durable store failed, once an event was refused because it did (or a publish
    /// was): no later event can be persisted, so reading stops.
    pub(crate) store_error: Option<String>,
    out: Box<dyn Write + 'a>,
    err: Box<dyn Write + 'a>,
}

/// Refused events from input lines `first` to `last` (`n` of them), all for the same reason.
struct Refused {
    first: u64,
    last: u64,
    n: u64,
    why: String,
}

impl<'a, T: Outcome> Progress<'a, T> {
    /// Progress lines to `out`, refusals to `err`.
    pub(crate) fn new(out: Box<dyn Write + 'a>, err: Box<dyn Write + 'a>) -> Self {
        Progress {
            waiting: VecDeque::new(),
            durable: 0,
            not_durable: 0,
            printed: None,
            refused: None,
            store_error: None,
            out,
            err,
        }
    }

    /// An event refused for `e`: said with the refusals next to it that have the same cause.
    fn refuse(&mut self, line: u64, e: &Error) {
        self.not_durable += 1;
        let why = e.to_string();
        if matches!(e, Error::Storage { .. }) && self.store_error.is_none() {
            self.store_error = Some(why.clone());
        }
        match &mut self.refused {
            Some(r) if r.why == why => {
                r.last = line;
                r.n += 1;
            }
            _ => {
                self.say_refused();
                self.refused = Some(Refused {
                    first: line,
                    last: line,
                    n: 1,
                    why,
                });
            }
        }
    }

    /// Says the refusals not said yet, in one line.
    fn say_refused(&mut self) {
        let Some(r) = self.refused.take() else {
            return;
        };
        let _ = if r.n == 1 {
            writeln!(self.err, "line {}: not durable: {}", r.first, r.why)
        } else {
            writeln!(
                self.err,
                "lines {} to {}: {} events not durable: {}",
                r.first, r.last, r.n, r.why
            )
        };
    }

    /// An event published from input line `line`.
    pub(crate) fn push(&mut self, line: u64, t: T) {
        self.waiting.push_back((line, t));
    }

    /// Takes the decided events at the front (never blocks) and prints `durable_through` if
    /// it grew.
    pub(crate) fn tick(&mut self) {
        while let Some(outcome) = self.waiting.front().and_then(|(_, t)| t.outcome()) {
            let Some((line, _)) = self.waiting.pop_front() else {
                break;
            };
            match outcome {
                Ok(()) => {
                    self.say_refused();
                    self.durable += 1;
                }
                Err(e) => self.refuse(line, &e),
            }
        }
        if self.printed.is_none_or(|p| self.durable > p) && self.durable > 0 {
            self.print();
        }
    }

    /// At the end of the input: waits (until `deadline`) for every event's outcome, printing
    /// progress as they come, and prints the final `durable_through` (also when nothing was
    /// durable, so there always is one).
    pub(crate) fn finish(&mut self, deadline: Instant) {
        while let Some((_, t)) = self.waiting.front() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            t.wait_for(left.min(POLL));
            self.tick();
        }
        self.tick();
        self.say_refused();
        if self.printed.is_none() {
            self.print();
        }
    }

    /// After shutdown, when every outcome is known: takes them all. An event still undecided
    /// then is counted as not durable.
    pub(crate) fn settle_all(&mut self) {
        self.tick();
        let undecided: Vec<u64> = self.waiting.drain(..).map(|(line, _)| line).collect();
        let why = Error::other(io::Error::other("no outcome at shutdown"));
        for line in undecided {
            self.refuse(line, &why);
        }
        self.say_refused();
    }

    /// Prints `{"durable_through": N}` (best effort: a closed stdout does not stop delivery)
    /// and flushes it, for whoever reads it live.
    fn print(&mut self) {
        let _ = writeln!(self.out, "{{\"durable_through\": {}}}", self.durable);
        let _ = self.out.flush();
        self.printed = Some(self.durable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A ticket decided by the test.
    #[derive(Clone, Default)]
    struct Fake(Rc<Cell<Option<bool>>>);

    impl Outcome for Fake {
        fn outcome(&self) -> Option<Result<(), Error>> {
            self.0
                .get()
                .map(|ok| if ok { Ok(()) } else { Err(Error::Closed) })
        }
        fn wait_for(&self, _: Duration) {}
    }

    fn lines(buf: &[u8]) -> Vec<String> {
        String::from_utf8(buf.to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn durable_through_counts_the_leading_decided_events_in_order() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut p = Progress::new(Box::new(&mut out), Box::new(&mut err));
            let t: Vec<Fake> = (0..5).map(|_| Fake::default()).collect();
            for (i, f) in t.iter().enumerate() {
                p.push(i as u64 + 1, f.clone());
            }
            p.tick();
            // The second and third are durable, but the first is not decided: nothing yet.
            t[1].0.set(Some(true));
            t[2].0.set(Some(true));
            p.tick();
            assert_eq!(p.durable, 0);
            t[0].0.set(Some(true));
            p.tick();
            assert_eq!(p.durable, 3);
            p.tick(); // no change, no line
            // A refused event is reported and skipped; the count goes on after it.
            t[3].0.set(Some(false));
            t[4].0.set(Some(true));
            p.finish(Instant::now() + Duration::from_secs(1));
            assert_eq!((p.durable, p.not_durable), (4, 1));
        }
        assert_eq!(
            lines(&out),
            ["{\"durable_through\": 3}", "{\"durable_through\": 4}"]
        );
        assert_eq!(lines(&err), ["line 4: not durable: sink is closed"]);
    }

    /// An outcome fixed in advance.
    struct Decided(Result<(), Error>);

    impl Outcome for Decided {
        fn outcome(&self) -> Option<Result<(), Error>> {
            Some(self.0.clone())
        }
        fn wait_for(&self, _: Duration) {}
    }

    /// Issue 10, item 4: a failed store refuses every event of the group it was committing
    /// (and every one queued after it): one line says so, not one per event, and the failure
    /// is kept for the summary.
    #[test]
    fn a_run_of_refusals_for_one_reason_is_said_once() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let full = Error::Storage {
            op: "write",
            path: "/d/log/1.seg".into(),
            message: "No space left on device (os error 28)".into(),
            source: None,
        };
        {
            let mut p = Progress::new(Box::new(&mut out), Box::new(&mut err));
            p.push(1, Decided(Ok(())));
            p.push(2, Decided(Err(Error::Closed)));
            p.push(3, Decided(Ok(())));
            for line in 4..1000 {
                p.push(line, Decided(Err(full.clone())));
            }
            p.tick();
            p.finish(Instant::now() + Duration::from_secs(1));
            assert_eq!((p.durable, p.not_durable), (2, 997));
            assert_eq!(p.store_error, Some(full.to_string()));
        }
        assert_eq!(
            lines(&err),
            [
                "line 2: not durable: sink is closed".to_owned(),
                format!("lines 4 to 999: 996 events not durable: {full}"),
            ]
        );
    }

    #[test]
    fn the_end_always_prints_one_line_and_undecided_events_are_not_durable() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut p: Progress<'_, Fake> = Progress::new(Box::new(&mut out), Box::new(&mut err));
            p.finish(Instant::now());
            let stuck = Fake::default();
            p.push(7, stuck);
            p.finish(Instant::now()); // the deadline has passed: no wait, no new line
            p.settle_all();
            assert_eq!((p.durable, p.not_durable), (0, 1));
        }
        assert_eq!(lines(&out), ["{\"durable_through\": 0}"]);
        assert_eq!(lines(&err), ["line 7: not durable: no outcome at shutdown"]);
    }

    #[test]
    fn what_opening_found_is_said_on_stderr() {
        use hookwire::store::CursorRepair;
        let dir = Path::new("/d");
        let damage = |kind, lost: u64| Damage {
            kind,
            segment: 1,
            offset: 640,
            bytes: 99,
            reason: "record checksum mismatch".into(),
            after_seq: 252,
            next_seq: 253 + lost,
            lost,
            quarantined: Some("/d/quarantine/00000000000000000001-640.bin".into()),
        };
        let mut r = Recovery::default();
        r.damaged = vec![
            damage(DamageKind::Corrupt, 1),
            damage(DamageKind::Corrupt, 3),
            damage(DamageKind::TornTail, 0),
        ];
        r.slots_lost = true;
        r.cursors_reset = true;
        r.cursors_clamped = vec![CursorRepair {
            endpoint: "audit".into(),
            saved: 101,
            now: 51,
        }];
        r.first_seq = 1;
        r.next_seq = 51;
        let mut err = Vec::new();
        report_recovery(dir, &r, &mut err);
        let err = String::from_utf8(err).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 5, "{err}");
        assert!(lines[0].contains("00000000000000000001.seg: 99 damaged bytes at byte 640"));
        assert!(lines[0].contains("record 253 is lost"), "{err}");
        assert!(lines[0].contains("copied to /d/quarantine/"), "{err}");
        assert!(
            lines[1].contains("3 records, 253 to 255, are lost"),
            "{err}"
        );
        assert!(lines[2].contains("cut a torn tail of 99 bytes"), "{err}");
        assert!(lines[3].contains("slots.json and cursors.json"), "{err}");
        assert!(lines[4].contains("cursor of endpoint audit was at 101, past the end"));
        assert!(lines[4].contains("resumes at 51"), "{err}");
        // Nothing found, nothing said.
        let mut err = Vec::new();
        report_recovery(dir, &Recovery::default(), &mut err);
        assert!(err.is_empty());
    }

    #[test]
    fn a_locked_directory_says_why() {
        let e = in_use(Error::Storage {
            op: "lock",
            path: "/d/LOCK".into(),
            message: "would block".into(),
            source: None,
        });
        assert!(e.to_string().contains("another hookwire process"), "{e}");
        assert!(matches!(in_use(Error::Closed), Error::Closed));
    }
}
