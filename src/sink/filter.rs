//! Filtering: pass on only the events an endpoint asked for.
//!
//! A [`Filter`] asks a [`Matcher`] about each event and forwards the ones that match; `write`
//! blocks only as long as the wrapped sink does (a non-matching event returns at once) and keeps
//! the writer's order. A non-matching event is not a drop: it was never the endpoint's, so it is
//! counted apart, in [`FilterStats::filtered`], and `write` returns `Ok`. `close` closes the
//! wrapped sink; afterwards every `write`, matching or not, returns [`Error::Closed`].
//!
//! Matchers compose with three types and nothing else: [`Not`], [`AnyOf`] and [`AllOf`]. The
//! metadata matchers ([`MatchAction`], [`MatchKind`], [`MatchMediaType`]) compare exactly, and an
//! event that lacks the field matches none of them (so `Not(MatchAction::new([...]))` lets it
//! through).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sink::Sink;
use crate::stats::Counter;
use crate::{Error, Event};

/// Decides whether an event should go on.
///
/// Implemented for closures `Fn(&E) -> bool`, so `Filter::new(sink, |e: &u32| *e > 3)` works.
/// A matcher must be cheap and must not block: it runs on the writer's thread.
pub trait Matcher<E>: Send + Sync {
    /// Whether `event` should be forwarded.
    fn matches(&self, event: &E) -> bool;
}

impl<E, F> Matcher<E> for F
where
    F: Fn(&E) -> bool + Send + Sync,
{
    fn matches(&self, event: &E) -> bool {
        self(event)
    }
}

/// Inverts a matcher: matches what `M` does not.
#[derive(Debug, Clone)]
pub struct Not<M>(pub M);

impl<E, M: Matcher<E>> Matcher<E> for Not<M> {
    fn matches(&self, event: &E) -> bool {
        !self.0.matches(event)
    }
}

/// Matches when at least one of its matchers does. With no matchers it matches nothing.
pub struct AnyOf<E>(Vec<Box<dyn Matcher<E>>>);

/// Matches when every one of its matchers does. With no matchers it matches everything.
pub struct AllOf<E>(Vec<Box<dyn Matcher<E>>>);

macro_rules! combinator {
    ($name:ident, $method:ident) => {
        impl<E> $name<E> {
            /// An empty combinator; add matchers with [`with`](Self::with).
            pub fn new() -> Self {
                $name(Vec::new())
            }

            /// Adds a matcher.
            #[must_use]
            pub fn with(mut self, m: impl Matcher<E> + 'static) -> Self {
                self.0.push(Box::new(m));
                self
            }

            /// How many matchers it combines.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether it combines no matchers.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl<E> Default for $name<E> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<E> From<Vec<Box<dyn Matcher<E>>>> for $name<E> {
            fn from(v: Vec<Box<dyn Matcher<E>>>) -> Self {
                $name(v)
            }
        }

        impl<E> fmt::Debug for $name<E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({} matchers)", stringify!($name), self.0.len())
            }
        }

        impl<E> Matcher<E> for $name<E> {
            fn matches(&self, event: &E) -> bool {
                self.0.iter().$method(|m| m.matches(event))
            }
        }
    };
}

combinator!(AnyOf, any);
combinator!(AllOf, all);

/// One metadata matcher per field; each holds a short list of exact values.
macro_rules! field_matcher {
    ($(#[$doc:meta])* $name:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(Box<[String]>);

        impl $name {
            /// Matches events whose field equals one of `values`, exactly (case included).
            pub fn new<I, S>(values: I) -> Self
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                $name(values.into_iter().map(Into::into).collect())
            }

            /// The values it accepts.
            pub fn values(&self) -> &[String] {
                &self.0
            }
        }

        impl<E: Event> Matcher<E> for $name {
            fn matches(&self, event: &E) -> bool {
                // Lists are a handful of entries: a linear scan beats hashing here.
                event
                    .$field()
                    .is_some_and(|v| self.0.iter().any(|want| want == v))
            }
        }
    };
}

field_matcher!(
    /// Matches events whose [`Event::action`] is one of the given values (`push`, `pull`, ...).
    MatchAction,
    action
);
field_matcher!(
    /// Matches events whose [`Event::kind`] is one of the given values.
    MatchKind,
    kind
);
field_matcher!(
    /// Matches events whose [`Event::media_type`] is one of the given values.
    MatchMediaType,
    media_type
);

/// Matches events whose [`Event::repository`] matches one of the given globs: `*` within one
/// `/`-separated part, `**` across parts, `?` one character (`library/*`, `team/**`). An event
/// without a repository matches none.
///
/// ```
/// use hookwire::sink::{Matcher, MatchRepository};
/// use hookwire::RawEvent;
///
/// let m = MatchRepository::new(["library/*", "team/**"]);
/// let ev = |repo: &str| {
///     RawEvent::parse(format!(r#"{{"id":"1","target":{{"repository":"{repo}"}}}}"#)).unwrap()
/// };
/// assert!(m.matches(&ev("library/alpine")) && m.matches(&ev("team/app/api")));
/// assert!(!m.matches(&ev("library/a/b")) && !m.matches(&ev("other/app")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRepository(Box<[String]>);

impl MatchRepository {
    /// Matches events whose repository matches one of `globs`.
    pub fn new<I, S>(globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MatchRepository(globs.into_iter().map(Into::into).collect())
    }

    /// The globs it accepts.
    pub fn globs(&self) -> &[String] {
        &self.0
    }
}

impl<E: Event> Matcher<E> for MatchRepository {
    fn matches(&self, event: &E) -> bool {
        event
            .repository()
            .is_some_and(|r| self.0.iter().any(|g| crate::config::glob::glob_match(g, r)))
    }
}

/// What a [`Filter`] has seen.
#[derive(Debug, Default)]
pub struct FilterStats {
    /// Events that matched and were handed to the wrapped sink (whatever it answered).
    pub forwarded: Counter,
    /// Events that did not match and were let go (not a drop: they were never the endpoint's).
    pub filtered: Counter,
}

/// A [`Sink`] that forwards only the events its [`Matcher`] accepts.
///
/// Contract: a matching event is written to the wrapped sink on the caller's thread and its
/// result returned; a non-matching one returns `Ok` at once and is counted in
/// [`FilterStats::filtered`]. Order is the writer's. `close` closes the wrapped sink and
/// returns its result; after it, `write` returns [`Error::Closed`], and a second `close` too.
///
/// docker distribution's `ignoredmediatypes` / `ignore.actions` are a `Not`:
///
/// ```
/// use hookwire::sink::{Filter, MatchAction, MatchMediaType, AnyOf, Not, Sink, from_fn};
/// use hookwire::RawEvent;
///
/// let ignored = ["application/octet-stream"];
/// let endpoint = from_fn(|e: RawEvent| { println!("deliver {}", e.json()); Ok(()) });
/// let filter = Filter::new(
///     endpoint,
///     Not(AnyOf::new()
///         .with(MatchMediaType::new(ignored))
///         .with(MatchAction::new(["pull"]))),
/// );
/// let push = RawEvent::parse(r#"{"id":"1","action":"push","target":{"mediaType":"m"}}"#)?;
/// let blob = RawEvent::parse(
///     r#"{"id":"2","action":"push","target":{"mediaType":"application/octet-stream"}}"#,
/// )?;
/// filter.write(push)?;
/// filter.write(blob)?; // Ok, but not delivered
/// assert_eq!(filter.stats().forwarded.get(), 1);
/// assert_eq!(filter.stats().filtered.get(), 1);
/// # Ok::<(), hookwire::Error>(())
/// ```
pub struct Filter<S, M> {
    sink: S,
    matcher: M,
    closed: AtomicBool,
    stats: Arc<FilterStats>,
}

impl<S, M> Filter<S, M> {
    /// Wraps `sink`, forwarding only what `matcher` accepts.
    pub fn new(sink: S, matcher: M) -> Self {
        Filter {
            sink,
            matcher,
            closed: AtomicBool::new(false),
            stats: Arc::default(),
        }
    }

    /// The filter's counters; the `Arc` can outlive the filter.
    pub fn stats(&self) -> Arc<FilterStats> {
        self.stats.clone()
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.sink
    }
}

impl<S, M> fmt::Debug for Filter<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<E, S: Sink<E>, M: Matcher<E>> Sink<E> for Filter<S, M> {
    fn write(&self, event: E) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !self.matcher.matches(&event) {
            self.stats.filtered.inc();
            return Ok(());
        }
        self.stats.forwarded.inc();
        self.sink.write(event)
    }

    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        self.sink.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawEvent;
    use crate::sink::from_fn;
    use parking_lot::Mutex;

    fn recorder<E: Send + 'static>() -> (Arc<Mutex<Vec<E>>>, impl Sink<E> + use<E>, Arc<AtomicBool>)
    {
        let got = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (g, c) = (got.clone(), closed.clone());
        struct Rec<E>(Arc<Mutex<Vec<E>>>, Arc<AtomicBool>);
        impl<E: Send> Sink<E> for Rec<E> {
            fn write(&self, e: E) -> Result<(), Error> {
                self.0.lock().push(e);
                Ok(())
            }
            fn close(&self) -> Result<(), Error> {
                self.1.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
        (got, Rec(g, c), closed)
    }

    fn ev(json: &str) -> RawEvent {
        RawEvent::parse(json).unwrap()
    }

    // go-events' TestFilter: even numbers pass, odd ones are let go; then the close checks.
    #[test]
    fn forwards_matching_events_only() {
        let (got, sink, closed) = recorder::<u32>();
        let f = Filter::new(sink, |e: &u32| e.is_multiple_of(2));
        for i in 0..100 {
            f.write(i).unwrap();
        }
        assert_eq!(*got.lock(), (0..100).step_by(2).collect::<Vec<_>>());
        assert_eq!(f.stats().forwarded.get(), 50);
        assert_eq!(f.stats().filtered.get(), 50);

        f.close().unwrap();
        assert!(closed.load(Ordering::SeqCst));
        assert!(matches!(f.close(), Err(Error::Closed)));
        assert!(matches!(f.write(2), Err(Error::Closed)));
        assert!(
            matches!(f.write(3), Err(Error::Closed)),
            "filtered after close"
        );
        assert_eq!(got.lock().len(), 50);
    }

    #[test]
    fn downstream_errors_come_back() {
        let f = Filter::new(
            from_fn(|_: u8| Err(Error::Full { capacity: 2 })),
            |_: &u8| true,
        );
        assert!(matches!(f.write(1), Err(Error::Full { capacity: 2 })));
        assert_eq!(f.stats().forwarded.get(), 1);
    }

    #[test]
    fn metadata_matchers_are_exact_and_missing_fields_do_not_match() {
        let push = ev(r#"{"id":"1","action":"push","type":"t.a","target":{"mediaType":"m1"}}"#);
        let pull = ev(r#"{"id":"2","action":"pull","type":"t.b","target":{"mediaType":"m2"}}"#);
        let bare = ev(r#"{"id":"3"}"#);

        let a = MatchAction::new(["push", "delete"]);
        assert!(a.matches(&push) && !a.matches(&pull) && !a.matches(&bare));
        assert!(!MatchAction::new(["Push"]).matches(&push), "case matters");
        assert!(!MatchAction::new(Vec::<String>::new()).matches(&push));

        let k = MatchKind::new(["t.b"]);
        assert!(!k.matches(&push) && k.matches(&pull) && !k.matches(&bare));

        let m = MatchMediaType::new(vec!["m1".to_string()]);
        assert!(m.matches(&push) && !m.matches(&pull) && !m.matches(&bare));
        assert_eq!(m.values(), ["m1".to_string()]);

        // The missing field does not match, so the negation lets it through.
        assert!(Not(MatchMediaType::new(["m1"])).matches(&bare));
    }

    #[test]
    fn combinators() {
        let small = |e: &i32| *e < 10;
        let even = |e: &i32| e % 2 == 0;
        let any = AnyOf::new().with(small).with(even);
        let all = AllOf::new().with(small).with(even);
        assert_eq!(any.len(), 2);
        assert!(any.matches(&3) && any.matches(&12) && !any.matches(&13));
        assert!(all.matches(&4) && !all.matches(&3) && !all.matches(&12));
        assert!(Not(all).matches(&12));
        // Empty: AnyOf matches nothing, AllOf everything.
        assert!(!AnyOf::<i32>::new().matches(&1));
        assert!(AllOf::<i32>::default().is_empty() && AllOf::<i32>::new().matches(&1));
        let boxed: Vec<Box<dyn Matcher<i32>>> = vec![Box::new(small), Box::new(Not(even))];
        assert!(AllOf::from(boxed).matches(&3));
    }

    #[test]
    fn distribution_style_ignore_lists() {
        let (got, sink, _) = recorder::<RawEvent>();
        let f = Filter::new(
            sink,
            Not(AnyOf::new()
                .with(MatchMediaType::new(["application/octet-stream"]))
                .with(MatchAction::new(["pull"]))),
        );
        let events = [
            r#"{"id":"a","action":"push","target":{"mediaType":"application/json"}}"#,
            r#"{"id":"b","action":"push","target":{"mediaType":"application/octet-stream"}}"#,
            r#"{"id":"c","action":"pull","target":{"mediaType":"application/json"}}"#,
            r#"{"id":"d"}"#,
        ];
        for e in events {
            f.write(ev(e)).unwrap();
        }
        let ids: Vec<String> = got.lock().iter().map(|e| e.id().into_owned()).collect();
        assert_eq!(ids, ["a", "d"]);
        assert_eq!(f.stats().filtered.get(), 2);
    }
}
