//! `hookwire send`: NDJSON events from stdin to webhook endpoints, then a JSON summary.
//!
//! Options are checked first (`options.rs`), then the engine is started, stdin is read line by
//! line and each event published as it is read (for as long as the input lasts), and finally
//! `send` waits (at most `--timeout` from the end of the input) for every event's fate, shuts
//! the engine down and prints the summary (`summary.rs`).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use hookwire::engine::Dispatcher;
use hookwire::http::MediaType;
use hookwire::sink::Overflow;
use hookwire::stats::EndpointSnapshot;
use hookwire::{Error, RawEvent};

use crate::durable;
use crate::duration::{millis_arg, secs_arg, secs_to_a_day_arg};
use crate::input::Input;
use crate::ndjson::Line;
use crate::options::{HeaderArg, endpoint_configs, flagged, media_type_arg, overflow_arg};
use crate::progress::Meter;
use crate::signals;
use crate::summary::{Pumped, Summary};

/// Options of `hookwire send`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Input: one JSON object per line on stdin, each with an \"id\" (a string or a number); blank
lines are skipped; bad lines are reported on stderr as `line N: <reason>` and counted. With
a secret, an id must be printable ASCII (it is the webhook-id header): others are bad lines.
Durations take units (500ms, 30s, 5m, 1h, 2d); a bare number keeps its flag's unit.
Output: one JSON summary on one line of stdout (--pretty: indented), opening with \"results\",
one per endpoint (name, ok, events, delivered, dead_lettered, dropped, pending, and why not:
disabled, last_error), then the totals (accepted, events, delivered, ... summed over the
endpoints), elapsed_ms and every endpoint's counters. An endpoint that did not deliver
everything is also named on stderr, with its last error.
Exit code: 0 if every event was delivered to every endpoint and no line was bad; 1 otherwise;
2 for a bad option; 3 (--data-dir) if records in the data directory's log were lost to damage
(said on stderr and in the summary's \"damage\"; the damaged bytes are copied to
DIR/quarantine, and the records after them are delivered).
Input may stream for as long as it likes: --timeout only starts when it ends. SIGINT or
SIGTERM stops the reading: what was read is delivered until --timeout, the summary printed,
and the exit code is 130 (SIGINT) or 143 (SIGTERM); a second signal exits at once. An
endpoint disabled by 410 Gone ends the wait at once when nothing else is left to deliver.

Durable delivery (--data-dir DIR): every event is written to a log in DIR (fsynced, in groups)
before it is delivered, and stdout becomes NDJSON: a line {\"durable_through\": N} each time
the first N events read (bad lines and refused events are not counted) are all safe on disk,
then the summary on one line. Whatever was not delivered when send stopped (a crash, kill -9,
--timeout) stays in DIR: `hookwire send --data-dir DIR --resume` delivers it, with the
endpoint settings saved in DIR/send.json (no --secret and no --header values are saved: pass
them again). A run on DIR also delivers what an earlier one left there. Given up events are
kept in DIR: see `hookwire dlq`.

Example:
  printf '{\"id\":\"e1\",\"action\":\"push\"}\\n' | \\
    hookwire send --endpoint http://127.0.0.1:8080/hook --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  hookwire send --data-dir /var/lib/hookwire --endpoint http://127.0.0.1:8080/hook < events.ndjson
  hookwire send --data-dir /var/lib/hookwire --resume")]
pub(crate) struct SendArgs {
    /// Webhook URL to deliver to. Repeat for more endpoints: every event goes to each.
    /// With --resume: optional (default: the URLs saved in DIR/send.json).
    #[arg(
        long = "endpoint",
        value_name = "URL",
        required_unless_present = "resume"
    )]
    pub(crate) endpoints: Vec<String>,
    /// Name of the endpoint given at the same position (default: host:port of its URL;
    /// names are made unique with #2, #3...). A durable endpoint resumes by its name; with
    /// --resume the saved names are the default.
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) names: Vec<String>,
    /// Standard Webhooks signing secret (whsec_...). Repeat to sign with several (rotation).
    /// Visible in `ps`: prefer --secret-file or HOOKWIRE_SECRET (whitespace-separated secrets,
    /// read when neither flag is given). Errors never print a secret.
    #[arg(long = "secret", value_name = "whsec_...")]
    pub(crate) secrets: Vec<String>,
    /// Read signing secrets from PATH, one per line (blank lines skipped), after any --secret.
    #[arg(long = "secret-file", value_name = "PATH")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Also trust the CA certificate(s) in this PEM file for https endpoints (a private CA).
    /// Repeatable. Trusted besides the webpki roots and the system's certificate store.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub(crate) ca_files: Vec<PathBuf>,
    /// Do not verify the TLS certificate of this endpoint (its name, as in the summary, or
    /// its URL): anyone on the path can read and forge its deliveries. Repeat per endpoint;
    /// a warning is printed for each.
    #[arg(long = "insecure", value_name = "NAME|URL")]
    pub(crate) insecure: Vec<String>,
    /// Extra request header, as NAME:VALUE. Repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = HeaderArg)]
    pub(crate) headers: Vec<(String, String)>,
    /// Most events per request [default: 1].
    #[arg(long, value_name = "N")]
    pub(crate) batch: Option<usize>,
    /// How long a partial batch may wait for more events [default: 0] (a bare number: ms).
    #[arg(long, value_name = "DURATION", value_parser = millis_arg)]
    pub(crate) linger: Option<u64>,
    /// Time allowed for one request [default: 1s] (a bare number: ms).
    #[arg(long = "request-timeout", value_name = "DURATION", value_parser = millis_arg)]
    pub(crate) request_timeout: Option<u64>,
    /// Time allowed to connect [default: the request timeout] (a bare number: ms).
    #[arg(long = "connect-timeout", value_name = "DURATION", value_parser = millis_arg)]
    pub(crate) connect_timeout: Option<u64>,
    /// Events each endpoint may hold [default: 10000].
    #[arg(long, value_name = "N")]
    pub(crate) capacity: Option<usize>,
    /// What to do when an endpoint holds --capacity events: block (wait, at most --timeout),
    /// block:DURATION (wait at most that long; a bare number: ms), drop-newest, drop-oldest,
    /// reject [default: block]. Not
    /// with --data-dir: a durable endpoint keeps its backlog on disk.
    #[arg(long, value_name = "POLICY", value_parser = overflow_arg)]
    pub(crate) overflow: Option<Overflow>,
    /// Give an event up after this many attempts [default: no limit].
    #[arg(long = "max-attempts", value_name = "N")]
    pub(crate) max_attempts: Option<u32>,
    /// Give an event up once it has been retried for this long [default: 1d] (a bare number:
    /// seconds).
    #[arg(long = "max-age", value_name = "DURATION", value_parser = secs_arg)]
    pub(crate) max_age: Option<u64>,
    /// Requests in flight per endpoint; more than 1 gives up strict order [default: 1].
    #[arg(long = "max-in-flight", value_name = "N")]
    pub(crate) max_in_flight: Option<usize>,
    /// Envelope media type: v1 or v2 [default: v2].
    #[arg(long = "media-type", value_name = "v1|v2", value_parser = media_type_arg)]
    pub(crate) media_type: Option<MediaType>,
    /// Once the input ends (or SIGINT/SIGTERM stops the reading), wait at most this long for
    /// deliveries (what is left is reported). Reading itself has no time limit. At most 1d (a
    /// bare number: seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = secs_to_a_day_arg)]
    pub(crate) timeout: u64,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub(crate) workers: Option<usize>,
    /// Make delivery durable: keep every event in a log in DIR until it is delivered (or
    /// given up), and print {"durable_through": N} lines as events reach the disk.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print the summary indented, for people (default: one line of JSON).
    #[arg(long)]
    pub(crate) pretty: bool,
    /// Deliver what an earlier `send --data-dir DIR` left undelivered (stdin is not read),
    /// then print the summary. Exit code 0 only if all of it was delivered.
    #[arg(long, requires = "data_dir")]
    pub(crate) resume: bool,
    /// With --data-dir: the most bytes DIR's dead letters may take (default 268435456,
    /// 256 MiB). An event given up that does not fit is not kept: it is counted
    /// (dead_letter_errors in the summary) and said on stderr.
    #[arg(long = "dead-letter-cap", value_name = "BYTES", requires = "data_dir")]
    pub(crate) dead_letter_cap: Option<u64>,
}

/// Reads `input` to its end and publishes every event. Bad lines and failed publishes are
/// reported on `err` as `line N: ...`.
#[cfg(test)]
pub(crate) fn pump<R: io::BufRead>(
    input: R,
    signed: bool,
    err: &mut dyn Write,
    mut publish: impl FnMut(RawEvent) -> Result<(), Error>,
) -> Pumped {
    let mut lines = crate::ndjson::Lines::new(input, crate::ndjson::MAX_LINE).signed(signed);
    pump_lines(&mut || lines.next_line(), err, |_, ev| publish(ev))
}

/// Publishes every event of a source of numbered lines (`next` gives `None` at the end, or
/// when reading was stopped); `publish` gets each event with its line number. Bad lines and
/// failed publishes are reported on `err` as `line N: ...` (best effort: a closed stderr does
/// not stop the delivery). Reading has no time limit: `--timeout` starts after it.
pub(crate) fn pump_lines(
    next: &mut dyn FnMut() -> io::Result<Option<(u64, Line)>>,
    err: &mut dyn Write,
    mut publish: impl FnMut(u64, RawEvent) -> Result<(), Error>,
) -> Pumped {
    let mut p = Pumped::default();
    loop {
        let (n, line) = match next() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) => {
                let _ = writeln!(err, "stdin: {e}");
                p.input_error = Some(e.to_string());
                break;
            }
        };
        match line {
            Line::Blank => {}
            Line::Malformed(why) => {
                p.malformed += 1;
                let _ = writeln!(err, "line {n}: {why}");
            }
            Line::Event(ev) => match publish(n, ev) {
                Ok(()) => p.accepted += 1,
                Err(e) => {
                    p.publish_errors += 1;
                    let _ = writeln!(err, "line {n}: not published: {e}");
                }
            },
        }
    }
    p
}

/// Reads `input` until it ends or a signal stops it, publishing each event with `publish`;
/// `on_idle` runs while the input is idle; reading also stops once `also_stop()` holds. Says
/// on stderr when a signal stopped the reading, and records where.
pub(crate) fn read_input(
    input: &mut Input,
    also_stop: &dyn Fn() -> bool,
    on_idle: &mut dyn FnMut(),
    publish: impl FnMut(u64, RawEvent) -> Result<(), Error>,
) -> Pumped {
    let stop = || signals::received().is_some() || also_stop();
    let mut pumped = pump_lines(
        &mut || input.next(&stop, on_idle),
        &mut io::stderr(),
        publish,
    );
    if let Some(sig) = signals::received() {
        pumped.unread_from_line = input.unread_from_line();
        eprintln!(
            "hookwire: {}: stopped reading stdin; delivering what was read (until --timeout); \
             a second signal exits at once",
            sig.name()
        );
    }
    pumped
}

/// Waits until every event has its fate, `deadline` passes, or nothing more can happen: the
/// only endpoints still holding events are disabled (410 Gone, or failing too long), and
/// nothing re-enables an endpoint in `send`. Returns whether everything had its fate. `meter`
/// shows the counts meanwhile.
pub(crate) fn drain(d: &Dispatcher, deadline: Instant, meter: &Meter) -> bool {
    loop {
        meter.tick(d);
        let left = deadline.saturating_duration_since(Instant::now());
        if d.wait_idle(left.min(DRAIN_CHECK)) {
            return true;
        }
        if left <= DRAIN_CHECK || only_disabled_hold_events(&d.snapshot()) {
            return false;
        }
    }
}

/// How often [`drain`] looks for endpoints that can no longer deliver.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// Whether some endpoint is disabled and every endpoint that still holds events (taken or
/// unread) is.
pub(crate) fn only_disabled_hold_events(endpoints: &[EndpointSnapshot]) -> bool {
    let holds = |m: &hookwire::stats::Metrics| m.pending > 0 || m.unread > 0;
    endpoints.iter().any(|e| e.metrics.disabled)
        && endpoints
            .iter()
            .all(|e| e.metrics.disabled || !holds(&e.metrics))
}

/// The exit code of a run that printed `summary`: 130/143 if a signal stopped it.
pub(crate) fn exit_code(summary: &Summary) -> ExitCode {
    match signals::received() {
        Some(sig) => ExitCode::from(sig.exit_code()),
        None => ExitCode::from(summary.exit_code()),
    }
}

/// `hookwire send`.
pub(crate) fn main(args: &SendArgs) -> Result<ExitCode, Error> {
    let args = &crate::secrets::resolved(args)?;
    if let Some(dir) = &args.data_dir {
        return durable::main(args, dir);
    }
    signals::install()?;
    let configs = endpoint_configs(args)?;
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let mut builder = Dispatcher::builder().publish_timeout(timeout.min(Duration::from_secs(1)));
    if let Some(w) = args.workers {
        builder = builder.workers(w);
    }
    let d = builder.build().map_err(flagged)?;
    for c in configs {
        d.add_endpoint(c).map_err(flagged)?;
    }
    let mut input = Input::stdin(!args.secrets.is_empty())?;
    let meter = Meter::for_stderr();
    let pumped = read_input(&mut input, &|| false, &mut || meter.tick(&d), |_, ev| {
        let r = d.publish_raw(ev);
        meter.read_one(&d);
        r
    });
    // --timeout is the drain deadline: it starts when the input ends.
    let idle = drain(&d, Instant::now() + timeout, &meter);
    meter.finish();
    // Idle: nothing left to flush. Otherwise the deadline has passed: give what is in flight
    // a moment to finish, and report the rest.
    let report = d.shutdown(Duration::from_secs(1));
    let mut summary = Summary::new(
        &pumped,
        idle && report.drained,
        start.elapsed(),
        report.endpoints,
    );
    summary.signal = signals::received().map(signals::Signal::name);
    summary.report(&mut io::stderr());
    summary.write(&mut io::stdout().lock(), args.pretty)?;
    Ok(exit_code(&summary))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_publishes_counts_and_reports_by_line() {
        let input = "{\"id\":\"a\"}\n\nnope\n{\"id\":\"b\"}\n{\"id\":\"full\"}\n{\"no\":1}\n";
        let mut err = Vec::new();
        let mut got = Vec::new();
        let p = pump(input.as_bytes(), false, &mut err, |ev| {
            use hookwire::Event;
            if ev.id() == "full" {
                return Err(Error::Full { capacity: 1 });
            }
            got.push(ev.id().into_owned());
            Ok(())
        });
        assert_eq!(got, ["a", "b"]);
        assert_eq!(
            p,
            Pumped {
                accepted: 2,
                malformed: 2,
                publish_errors: 1,
                ..Pumped::default()
            }
        );
        let err = String::from_utf8(err).unwrap();
        let lines: Vec<_> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert_eq!(lines[0], "line 3: not a JSON object");
        assert!(
            lines[1].starts_with("line 5: not published: queue is full"),
            "{err}"
        );
        assert!(lines[2].starts_with("line 6: no \"id\""), "{err}");
    }

    /// Fails after `ok` bytes, as a broken pipe or a bad device would.
    struct Failing<'a> {
        data: &'a [u8],
    }

    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.is_empty() {
                return Err(std::io::Error::other("device went away"));
            }
            let k = buf.len().min(self.data.len());
            buf[..k].copy_from_slice(&self.data[..k]);
            self.data = &self.data[k..];
            Ok(k)
        }
    }

    #[test]
    fn a_read_error_stops_reading_and_is_reported() {
        let input = std::io::BufReader::new(Failing {
            data: b"{\"id\":1}\n{\"id\":2}\n{\"id\":3",
        });
        let mut err = Vec::new();
        let p = pump(input, false, &mut err, |_| Ok(()));
        assert_eq!(p.accepted, 2);
        assert_eq!(p.input_error.as_deref(), Some("device went away"));
        assert_eq!(String::from_utf8(err).unwrap(), "stdin: device went away\n");
    }

    #[test]
    fn only_disabled_endpoints_holding_events_end_the_wait() {
        let ep = |pending, unread, disabled| {
            let mut s = EndpointSnapshot::default();
            s.name = "ep".into();
            s.metrics.pending = pending;
            s.metrics.unread = unread;
            s.metrics.disabled = disabled;
            s
        };
        // A disabled endpoint holds events, the other is done: nothing more can happen.
        assert!(only_disabled_hold_events(&[
            ep(5, 0, true),
            ep(0, 0, false)
        ]));
        assert!(only_disabled_hold_events(&[ep(0, 0, true)]));
        // Another endpoint still has events taken or unread: keep waiting.
        assert!(!only_disabled_hold_events(&[
            ep(5, 0, true),
            ep(1, 0, false)
        ]));
        assert!(!only_disabled_hold_events(&[
            ep(5, 0, true),
            ep(0, 3, false)
        ]));
        // Nothing disabled: the ordinary wait.
        assert!(!only_disabled_hold_events(&[ep(0, 0, false)]));
        assert!(!only_disabled_hold_events(&[]));
    }

    #[test]
    fn timeouts_are_bounded() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            send: SendArgs,
        }
        let parse = |t: &str| T::try_parse_from(["x", "--endpoint", "http://h/", "--timeout", t]);
        assert_eq!(parse("86400").unwrap().send.timeout, 86_400);
        assert_eq!(parse("1d").unwrap().send.timeout, 86_400);
        assert_eq!(parse("2m30s").unwrap().send.timeout, 150);
        for bad in [
            "0",
            "86401",
            "18446744073709551615",
            "25h",
            "1500ms",
            "soon",
        ] {
            let e = parse(bad).err().unwrap();
            assert!(e.to_string().contains("--timeout"), "{e}");
        }
    }
}
