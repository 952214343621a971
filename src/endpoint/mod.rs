//! A docker-distribution style webhook endpoint: filter -> queue -> retry -> HTTP.
//!
//! [`Endpoint`] is the layer-1 toolkit assembled the way docker distribution's
//! `notifications.Endpoint` is, with hookwire's fixes: the queue is bounded with an explicit
//! overflow policy, retries can give up (to a dead-letter sink) instead of blocking forever,
//! permanent failures and `410 Gone` are told apart from transient ones, requests can be
//! signed, and the stats count every event's fate and record latency.
//!
//! Contract: `write` never waits on the network. It filters, stamps the event with the time it
//! was accepted, and queues it; what happens when the queue is full is the configured
//! [`Overflow`](crate::sink::Overflow) policy. One background thread delivers the queue in
//! order, one event per request (distribution-compatible). `close` drains within
//! `close_timeout` and counts what it could not deliver as dropped (`shutdown`).

pub use crate::config::{BatchConfig, Durability, EndpointConfig, RetryConfig};

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::http::{HttpConfig, HttpSink, HttpStats};
use crate::policy::{Clock, SystemClock};
use crate::sink::{
    AnyOf, CloseReport, Filter, FilterStats, GivenUp, MatchAction, MatchMediaType, MatchRepository,
    Not, Queue, QueueBuilder, QueueStats, RetryStats, RetryingSink,
};
use crate::stats::{EndpointSnapshot, LatencyHistogram, Metrics};
use crate::{Error, Event, Sink};

/// An event with the moment its endpoint accepted it, so delivery lag can be measured.
#[derive(Clone, Debug)]
pub struct Timed<E> {
    /// The event.
    pub event: E,
    /// When the endpoint accepted it.
    pub accepted: Instant,
}

impl<E: Serialize> Serialize for Timed<E> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.event.serialize(s)
    }
}

impl<E: Event> Event for Timed<E> {
    fn id(&self) -> Cow<'_, str> {
        self.event.id()
    }
    fn kind(&self) -> Option<&str> {
        self.event.kind()
    }
    fn action(&self) -> Option<&str> {
        self.event.action()
    }
    fn media_type(&self) -> Option<&str> {
        self.event.media_type()
    }
    fn repository(&self) -> Option<&str> {
        self.event.repository()
    }
}

/// The last stage: posts the event and, when it is delivered, records how long it took from
/// acceptance.
struct Deliver {
    http: HttpSink,
    lag: Arc<LatencyHistogram>,
    clock: Arc<dyn Clock>,
}

impl<E: Event> Sink<Timed<E>> for Deliver {
    fn write(&self, t: Timed<E>) -> Result<(), Error> {
        self.http.write(&t.event)?;
        let now = self.clock.now();
        self.lag.record(now.saturating_duration_since(t.accepted));
        Ok(())
    }
    fn close(&self) -> Result<(), Error> {
        Sink::<&E>::close(&self.http)
    }
}

/// Hands dead letters to the user's sink without the timestamp.
struct Unwrap<E>(Arc<dyn Sink<GivenUp<E>>>);

impl<E: Send + Sync> Sink<GivenUp<Timed<E>>> for Unwrap<E> {
    fn write(&self, d: GivenUp<Timed<E>>) -> Result<(), Error> {
        self.0.write(GivenUp {
            event: d.event.event,
            reason: d.reason,
            last_error: d.last_error,
            attempts: d.attempts,
            first_attempt: d.first_attempt,
        })
    }
    fn close(&self) -> Result<(), Error> {
        self.0.close()
    }
}

type Retry<E> = RetryingSink<Timed<E>, Deliver>;
/// The endpoint's first stage: distribution's ignore lists in front of the gate and the queue.
type Head<E> = Filter<Gate<E>, Not<AnyOf<Timed<E>>>>;

/// Between the filter and the queue: a closed endpoint says `Closed`, a disabled one says
/// `Disabled`, in that order, and only for events the filter wanted.
struct Gate<E: Event + Clone + 'static> {
    queue: Arc<Queue<Timed<E>>>,
    retry: Arc<Retry<E>>,
}

impl<E: Event + Clone + 'static> Sink<Timed<E>> for Gate<E> {
    fn write(&self, event: Timed<E>) -> Result<(), Error> {
        if self.queue.is_closed() {
            return Err(Error::Closed);
        }
        if let Some(reason) = self.retry.disabled_reason() {
            return Err(Error::Disabled { reason });
        }
        self.queue.write(event)
    }
    fn close(&self) -> Result<(), Error> {
        self.queue.close()
    }
}

/// A webhook endpoint: filter -> bounded queue -> retrying sink -> HTTP.
///
/// ```
/// use hookwire::endpoint::{Endpoint, EndpointConfig};
/// use hookwire::testkit::{Receiver, ReceiverConfig};
/// use hookwire::{RawEvent, Sink};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let receiver = Receiver::start(ReceiverConfig::default())?;
/// let endpoint = Endpoint::new(EndpointConfig::new("audit", receiver.url()))?;
/// endpoint.write(RawEvent::parse(r#"{"id":"e1","action":"push"}"#)?)?;
/// endpoint.close()?; // drains the queue first
/// assert_eq!(endpoint.snapshot().metrics.delivered, 1);
/// assert_eq!(receiver.ids(), vec!["e1".to_string()]);
/// # Ok(()) }
/// ```
pub struct Endpoint<E: Event + Clone + 'static> {
    config: EndpointConfig,
    head: Head<E>,
    queue: Arc<Queue<Timed<E>>>,
    retry: Arc<Retry<E>>,
    filter_stats: Arc<FilterStats>,
    queue_stats: Arc<QueueStats>,
    retry_stats: Arc<RetryStats>,
    http_stats: Arc<HttpStats>,
    lag: Arc<LatencyHistogram>,
    clock: Arc<dyn Clock>,
}

/// Builds an [`Endpoint`] with the parts that are not configuration: a dead-letter sink and a
/// clock.
#[must_use = "a builder does nothing until `build` is called"]
pub struct EndpointBuilder<E> {
    config: EndpointConfig,
    dead_letter: Option<Arc<dyn Sink<GivenUp<E>>>>,
    clock: Arc<dyn Clock>,
}

impl<E: Event + Clone + 'static> EndpointBuilder<E> {
    /// Events given up on go to `sink` (they are counted as dead-lettered either way).
    pub fn dead_letter(mut self, sink: Arc<dyn Sink<GivenUp<E>>>) -> Self {
        self.dead_letter = Some(sink);
        self
    }

    /// Uses `clock` for backoff waits, timestamps and latencies (tests pass a `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the configuration and starts the endpoint's delivery thread.
    pub fn build(self) -> Result<Endpoint<E>, Error> {
        let cfg = self.config;
        let secrets = cfg.validate()?;
        // What only the engine does is refused here, never ignored.
        if cfg.batch != crate::config::BatchConfig::default() {
            return Err(Error::config(
                "batch",
                "a layer-1 Endpoint sends one event per request (docker distribution's way); \
                 batching is the engine's (engine::Dispatcher)",
            ));
        }
        if cfg.rate_limit.is_some() || cfg.request_rate_limit.is_some() || cfg.adaptive_concurrency
        {
            return Err(Error::config(
                "rate_limit",
                "a layer-1 Endpoint has no rate limit or adaptive concurrency; they are the \
                 engine's (engine::Dispatcher)",
            ));
        }
        if cfg.max_in_flight != 1 {
            return Err(Error::config(
                "max_in_flight",
                "a layer-1 Endpoint has one request in flight (its queue's one thread); \
                 more is the engine's (engine::Dispatcher)",
            ));
        }
        if !cfg.allow_private {
            return Err(Error::config(
                "allow_private",
                "a layer-1 Endpoint cannot check the addresses ureq resolves; the SSRF guard \
                 is the engine's (engine::Dispatcher)",
            ));
        }
        if cfg.durability != crate::config::Durability::Memory {
            return Err(Error::config(
                "durability",
                "a layer-1 Endpoint keeps its queue in memory; durable endpoints are the \
                 engine's (engine::Dispatcher with a data directory)",
            ));
        }
        let mut http = HttpConfig::new(cfg.url.clone());
        http.tls = cfg.tls.clone();
        http.headers = cfg.headers.clone();
        http.timeout = cfg.timeout;
        http.connect_timeout = cfg.connect_timeout;
        http.media_type = cfg.media_type;
        http.secrets = secrets;
        let http = HttpSink::new(http)?.clock(self.clock.clone());
        let http_stats = http.stats();
        let lag = Arc::new(LatencyHistogram::default());
        let deliver = Deliver {
            http,
            lag: lag.clone(),
            clock: self.clock.clone(),
        };
        let mut retry = RetryingSink::new(deliver, crate::config::strategy::<Timed<E>>(&cfg)?)
            .clock(self.clock.clone());
        if let Some(dl) = self.dead_letter {
            retry = retry.dead_letter(Arc::new(Unwrap(dl)));
        }
        let retry = Arc::new(retry);
        let retry_stats = retry.stats();
        let queue = Arc::new(
            QueueBuilder::new(cfg.capacity, cfg.overflow)
                .close_timeout(cfg.close_timeout)
                .thread_name(format!("hookwire-{}", cfg.name))
                .build(retry.clone())?,
        );
        let queue_stats = queue.stats();
        // distribution's ignore lists: drop what matches either.
        // distribution's ignore lists, and the repository globs: drop what matches either.
        let mut ignored = AnyOf::new()
            .with(MatchMediaType::new(cfg.ignored_media_types.iter().cloned()))
            .with(MatchAction::new(cfg.ignored_actions.iter().cloned()));
        if !cfg.repositories.is_empty() {
            ignored = ignored.with(Not(MatchRepository::new(cfg.repositories.iter().cloned())));
        }
        let wanted = Not(ignored);
        let gate = Gate {
            queue: queue.clone(),
            retry: retry.clone(),
        };
        let head = Filter::new(gate, wanted);
        let filter_stats = head.stats();
        Ok(Endpoint {
            config: cfg,
            head,
            queue,
            retry,
            filter_stats,
            queue_stats,
            retry_stats,
            http_stats,
            lag,
            clock: self.clock,
        })
    }
}

impl<E: Event + Clone + 'static> Endpoint<E> {
    /// Builds and starts an endpoint from `config` with the system clock and no dead-letter
    /// sink. Fails with [`Error::Config`] naming the first bad field.
    pub fn new(config: EndpointConfig) -> Result<Self, Error> {
        Self::builder(config).build()
    }

    /// A builder, for a dead-letter sink or a test clock.
    pub fn builder(config: EndpointConfig) -> EndpointBuilder<E> {
        EndpointBuilder {
            config,
            dead_letter: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Whether the endpoint is disabled (it answered `410 Gone`, or its breaker gave up on it).
    /// While disabled, `write` returns [`Error::Disabled`] and queued events are dead-lettered.
    pub fn is_disabled(&self) -> bool {
        self.retry.is_disabled()
    }

    /// Enables a disabled endpoint again.
    pub fn enable(&self) {
        self.retry.enable();
    }

    /// Disables the endpoint by hand: writes get [`Error::Disabled`] and queued events are
    /// dead-lettered until [`enable`](Self::enable).
    pub fn disable(&self, reason: impl Into<String>) {
        self.retry.disable(reason);
    }

    /// Stops accepting events, delivers what is queued until `deadline` has passed, then drops
    /// the rest (counted as `shutdown`) and reports. Never waits longer than `deadline` plus
    /// one request timeout. Returns [`Error::Closed`] if it was closed already.
    pub fn close_within(&self, deadline: Duration) -> Result<CloseReport, Error> {
        self.queue.close_within(deadline)
    }

    /// The endpoint's counters, now. See [`Metrics`] for what each means; the identity
    /// `events = delivered + dropped + dead_lettered + pending` holds in every snapshot.
    pub fn snapshot(&self) -> EndpointSnapshot {
        // Fates first, arrivals last: see the stats::snapshot module docs.
        let delivered = self.retry_stats.delivered.get();
        let dead_lettered = self.retry_stats.dead_lettered.get();
        let dropped: std::collections::BTreeMap<_, _> = self.queue_stats.dropped.iter().collect();
        let events = self.queue_stats.events.get();
        let finished = delivered + dead_lettered + dropped.values().sum::<u64>();
        // Never negative if every event has one fate; were one counted twice, `pending` would
        // read 0 and `Metrics::balanced` would say so.
        let pending = events.saturating_sub(finished);
        // Read from the queue itself, not derived: a lost event cannot hide here.
        let (queued, in_flight) = self.queue.depth();
        let h = &self.http_stats;
        let metrics = Metrics {
            events,
            pending,
            queued: queued as u64,
            in_flight,
            unread: 0,
            delivered,
            dropped,
            dead_lettered,
            dead_letter_errors: self.retry_stats.dead_letter_errors.get(),
            filtered: self.filter_stats.filtered.get(),
            successes: h.successes.get(),
            failures: h.failures.get(),
            errors: h.errors.get(),
            retries: self.retry_stats.retries.get(),
            statuses: h.statuses.iter().collect(),
            disabled: self.retry.is_disabled(),
            rtt: h.rtt.summary(),
            delivery_lag: self.lag.summary(),
        };
        EndpointSnapshot {
            health: Default::default(),
            name: self.config.name.clone(),
            url: crate::config::redact_url(&self.config.url),
            config: self.config.view(),
            metrics,
        }
    }
}

impl<E: Event + Clone + 'static> std::fmt::Debug for Endpoint<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.config.name)
            .field("url", &crate::config::redact_url(&self.config.url))
            .finish_non_exhaustive()
    }
}

impl<E: Event + Clone + 'static> Drop for Endpoint<E> {
    /// Closes the endpoint if it was not closed: delivers what is queued within
    /// `close_timeout` and counts the rest, so a dropped endpoint leaves no thread retrying
    /// behind it.
    fn drop(&mut self) {
        let _ = self.queue.close_within(self.config.close_timeout);
    }
}

impl<E: Event + Clone + 'static> Sink<E> for Endpoint<E> {
    /// Filters, stamps and queues the event; never waits on the network. Returns
    /// [`Error::Disabled`] while the endpoint is disabled, and what the queue's overflow policy
    /// returns when it is full.
    fn write(&self, event: E) -> Result<(), Error> {
        let accepted = self.clock.now();
        self.head.write(Timed { event, accepted })
    }

    /// Closes within `close_timeout`; returns [`Error::Undelivered`] if events had to be
    /// dropped.
    fn close(&self) -> Result<(), Error> {
        self.head.close()
    }
}
