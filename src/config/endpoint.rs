//! What an endpoint is built from, in either layer: a layer-1
//! [`Endpoint`](crate::endpoint::Endpoint) or an engine endpoint
//! ([`Dispatcher::add_endpoint`](crate::engine::Dispatcher::add_endpoint)).
//!
//! The first fields are docker distribution's `EndpointConfig` (headers, timeout, threshold,
//! backoff, ignored media types and actions), with its defaults; the rest are hookwire's
//! (bounded capacity and its overflow policy, the retry strategy and its limits, signing
//! secrets, envelope media type, close deadline). Everything is checked by
//! [`EndpointConfig::validate`] when the endpoint is built, so a bad value is an
//! [`Error::Config`] at construction, never a panic later.

use std::time::Duration;

use crate::Error;
use crate::http::{MediaType, Secret, TlsOptions};
use crate::policy::{Backoff, BreakerConfig};
use crate::policy::{
    CircuitBreaker, ConsecutiveFailures, ExponentialBackoff, RateLimit, RetryStrategy, Schedule,
};
use crate::stats::ConfigView;

use super::{BatchConfig, Overflow};

/// The longest duration any setting accepts; anything longer is a typo.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// How an endpoint retries a failed delivery.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryConfig {
    /// docker distribution's behaviour (go-events' "Breaker"): after `threshold` consecutive
    /// failures, wait `backoff` after the last failure before trying again. distribution
    /// retries forever; we give an event up after 24 hours of retrying (counted from its first
    /// attempt) unless `max_attempts` or `max_age` says otherwise.
    ConsecutiveFailures,
    /// Exponential backoff with full jitter: `base * factor^n`, capped at `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth factor (at least 1).
        factor: u32,
        /// The longest delay.
        max: Duration,
    },
    /// Explicit delays before each retry (e.g. 5 s, 5 min, 30 min, 2 h); when they run out the
    /// event is given up.
    Schedule(Vec<Duration>),
    /// The full circuit breaker (consecutive failures or failure rate, half-open probes,
    /// auto-disable) with a backoff between retries of one event.
    CircuitBreaker {
        /// When the breaker opens, how long it stays open, when it disables the endpoint.
        breaker: BreakerConfig,
        /// The delay between retries of one event while the breaker is closed.
        backoff: Backoff,
    },
}

/// An endpoint's configuration. Build one with [`EndpointConfig::new`] and change the fields
/// you need; [`Endpoint::new`](crate::endpoint::Endpoint::new) and
/// [`Dispatcher::add_endpoint`](crate::engine::Dispatcher::add_endpoint) validate it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// A name for stats and logs; unique among a program's endpoints.
    pub name: String,
    /// The webhook URL (`http://` or `https://`).
    pub url: String,
    /// Static headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Total time allowed for one request. Default 1 s (distribution's).
    pub timeout: Duration,
    /// Time allowed to connect; `None` means the same as `timeout`.
    pub connect_timeout: Option<Duration>,
    /// Consecutive failures before backing off (`ConsecutiveFailures`). Default 10.
    pub threshold: u32,
    /// How long to back off after the threshold is reached. Default 1 s.
    pub backoff: Duration,
    /// Events whose target media type is one of these are not sent.
    pub ignored_media_types: Vec<String>,
    /// Events whose action is one of these are not sent.
    pub ignored_actions: Vec<String>,
    /// If not empty, only events whose target repository (`target.repository`) matches one of
    /// these globs are sent: `library/*` (one path part), `team/**` (any depth), `app-?`
    /// (see [`Event::repository`](crate::Event::repository)); an event without a repository is
    /// not sent. Empty (the default): every repository.
    pub repositories: Vec<String>,
    /// How many events the endpoint's queue holds. Default 10,000.
    pub capacity: usize,
    /// What happens when the queue is full. Default `Reject`: the writer gets
    /// [`Error::Full`] and decides, so nothing is lost without the host knowing.
    pub overflow: Overflow,
    /// How failed deliveries are retried. Default [`RetryConfig::ConsecutiveFailures`].
    pub retry: RetryConfig,
    /// Give an event up after this many attempts (`None`: no limit).
    pub max_attempts: Option<u32>,
    /// Give an event up once it has been retried for this long (`None`: no limit).
    pub max_age: Option<Duration>,
    /// Standard Webhooks secrets (`whsec_...`); with more than one, every request carries a
    /// signature per secret (for rotation). Empty: requests are not signed.
    pub secrets: Vec<String>,
    /// The envelope's media type. Default v2.
    pub media_type: MediaType,
    /// How long `close` drains the queue before it drops the rest (counted). Default 5 s.
    pub close_timeout: Duration,
    /// How events are grouped into requests (engine only: a layer-1 `Endpoint` sends one event
    /// per request and refuses anything else with `Error::Config`). Default: one event per
    /// request, as docker distribution does.
    pub batch: BatchConfig,
    /// Requests in flight at once (engine only: a layer-1 `Endpoint` refuses more than 1).
    /// Default 1, which keeps strict FIFO order; more than one trades order for throughput.
    pub max_in_flight: usize,
    /// TLS settings for `https://` URLs, in both layers: a private CA (trusted beside the
    /// webpki roots), or no verification at all. Default: the webpki roots.
    pub tls: TlsOptions,
    /// At most this many events per second (engine only): a batch waits for its events'
    /// tokens. `None` (the default): no limit.
    pub rate_limit: Option<RateLimit>,
    /// At most this many requests per second (engine only). `None` (the default): no limit.
    pub request_rate_limit: Option<RateLimit>,
    /// Learn how many requests may be in flight, from 1 up to `max_in_flight` (engine only):
    /// one more per round trip while answers come back at their usual pace, halved when the
    /// endpoint pushes back (429, 503, a timeout, round trips far longer than usual). Default
    /// off: always up to `max_in_flight`.
    pub adaptive_concurrency: bool,
    /// Whether the engine keeps this endpoint's events in memory only (the default) or in its
    /// durable log (engine only, with a data directory; a layer-1 `Endpoint` refuses
    /// `Durable`). Set both this and
    /// `overflow` with [`EndpointConfig::durable`].
    pub durability: Durability,
    /// Whether the engine may connect to loopback, private, link-local, cloud-metadata and
    /// other non-public addresses ([`http::non_public`](crate::http::non_public)). Default
    /// `true`: a library's caller chooses its URLs. **Turn it off when URLs come from anyone
    /// else** (tenants, an API): every resolved address is then checked just before each
    /// connect, so DNS rebinding cannot pass (`hookwire serve` turns it off unless an
    /// endpoint sets `allow_private = true`). A layer-1 `Endpoint` refuses `false` (ureq
    /// resolves inside itself; the engine can check).
    pub allow_private: bool,
}

/// Where an engine endpoint's undelivered events live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// In memory: bounded by `capacity` and the overflow policy; lost if the process dies.
    #[default]
    Memory,
    /// In the dispatcher's durable log: an event is persisted (group commit) before it is
    /// delivered, the endpoint's cursor is persisted as deliveries are acknowledged, and after
    /// a restart the endpoint resumes from its cursor. Needs `Overflow::Spill`: the backlog
    /// beyond `capacity` stays on disk, bounded by the store's quota.
    Durable,
}

impl EndpointConfig {
    /// A configuration with distribution's defaults (timeout 1 s, threshold 10, backoff 1 s)
    /// and hookwire's (capacity 10,000, `Reject` on overflow, close within 5 s).
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        EndpointConfig {
            name: name.into(),
            url: url.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            connect_timeout: None,
            threshold: 10,
            backoff: Duration::from_secs(1),
            ignored_media_types: Vec::new(),
            ignored_actions: Vec::new(),
            repositories: Vec::new(),
            capacity: 10_000,
            overflow: Overflow::Reject,
            retry: RetryConfig::ConsecutiveFailures,
            max_attempts: None,
            max_age: None,
            secrets: Vec::new(),
            media_type: MediaType::V2,
            close_timeout: Duration::from_secs(5),
            batch: BatchConfig::default(),
            max_in_flight: 1,
            tls: TlsOptions::default(),
            rate_limit: None,
            request_rate_limit: None,
            adaptive_concurrency: false,
            durability: Durability::Memory,
            allow_private: true,
        }
    }

    /// Makes the endpoint durable (engine only): `durability = Durable` and `overflow =
    /// Spill`. `capacity` then bounds only the events it holds in memory.
    pub fn durable(mut self) -> Self {
        self.durability = Durability::Durable;
        self.overflow = Overflow::Spill;
        self
    }

    /// Checks every field that the parts do not check themselves, and parses the secrets.
    pub(crate) fn validate(&self) -> Result<Vec<Secret>, Error> {
        if self.name.trim().is_empty() {
            return Err(Error::config("name", "must not be empty"));
        }
        if self.threshold == 0 {
            return Err(Error::config("threshold", "must be at least 1"));
        }
        for (field, d) in [
            ("backoff", self.backoff),
            ("close_timeout", self.close_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(Error::config(field, format!("{d:?} is longer than a year")));
            }
        }
        for glob in &self.repositories {
            super::glob::check(glob).map_err(|why| Error::config("repositories", why))?;
        }
        if self.max_attempts == Some(0) {
            return Err(Error::config(
                "max_attempts",
                "must be at least 1 (or unset)",
            ));
        }
        if let Some(d) = self.max_age
            && (d.is_zero() || d > MAX_DURATION)
        {
            return Err(Error::config(
                "max_age",
                format!("{d:?} must be more than zero and at most a year"),
            ));
        }
        if !(1..=10_000).contains(&self.batch.max_events) {
            return Err(Error::config("batch.max_events", "must be 1 to 10,000"));
        }
        if self.batch.max_bytes < 1024 {
            return Err(Error::config("batch.max_bytes", "must be at least 1 KiB"));
        }
        if self.batch.linger > MAX_DURATION {
            return Err(Error::config("batch.linger", "is longer than a year"));
        }
        match (self.durability, self.overflow) {
            (Durability::Durable, Overflow::Spill) | (Durability::Memory, _) => {}
            (Durability::Durable, _) => {
                return Err(Error::config(
                    "overflow",
                    "a durable endpoint keeps its backlog on disk: use Overflow::Spill \
                     (EndpointConfig::durable sets both)",
                ));
            }
        }
        if self.durability == Durability::Memory && self.overflow == Overflow::Spill {
            return Err(Error::config(
                "overflow",
                "Spill needs durability = Durable (EndpointConfig::durable)",
            ));
        }
        for (field, limit) in [
            ("rate_limit", &self.rate_limit),
            ("request_rate_limit", &self.request_rate_limit),
        ] {
            if let Some(l) = limit {
                l.validate(field)?;
            }
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(Error::config("max_in_flight", "must be 1 to 64"));
        }
        self.secrets.iter().map(|s| s.parse::<Secret>()).collect()
    }

    /// What the stats dump shows of this configuration.
    pub(crate) fn view(&self) -> ConfigView {
        ConfigView {
            headers: self.headers.iter().map(|(k, _)| k.clone()).collect(),
            timeout: self.timeout,
            threshold: self.threshold,
            backoff: self.backoff,
            ignored_media_types: self.ignored_media_types.clone(),
            ignored_actions: self.ignored_actions.clone(),
            capacity: self.capacity,
            overflow: format!("{:?}", self.overflow),
            retry: format!("{:?}", self.retry),
            signed: !self.secrets.is_empty(),
        }
    }
}

/// The retry strategy the configuration asks for, with its limits applied.
pub(crate) fn strategy<E: 'static>(
    cfg: &EndpointConfig,
) -> Result<Box<dyn RetryStrategy<E>>, Error> {
    strategy_seeded(cfg, None)
}

/// Like [`strategy`], with its jitter seeded (`None`: from entropy), so that a run can be
/// replayed exactly (the simulator).
pub(crate) fn strategy_seeded<E: 'static>(
    cfg: &EndpointConfig,
    seed: Option<u64>,
) -> Result<Box<dyn RetryStrategy<E>>, Error> {
    macro_rules! limited {
        ($s:expr) => {{
            let mut s = $s;
            if let Some(seed) = seed {
                s = s.seed(seed);
            }
            if let Some(n) = cfg.max_attempts {
                s = s.max_attempts(n)?;
            }
            if let Some(d) = cfg.max_age {
                s = s.max_age(d)?;
            }
            Box::new(s) as Box<dyn RetryStrategy<E>>
        }};
    }
    Ok(match &cfg.retry {
        RetryConfig::ConsecutiveFailures => {
            limited!(ConsecutiveFailures::new(cfg.threshold, cfg.backoff)?)
        }
        RetryConfig::Exponential { base, factor, max } => {
            limited!(ExponentialBackoff::new(*base, *factor, *max)?)
        }
        RetryConfig::Schedule(delays) => limited!(Schedule::new(delays.clone())?),
        RetryConfig::CircuitBreaker { breaker, backoff } => {
            limited!(CircuitBreaker::new(*breaker, backoff.clone())?)
        }
    })
}

/// The URL as a dump may show it: credentials in the userinfo and the query string (where
/// webhook tokens often live) are replaced by `<redacted>`.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, _)) => (b, "?<redacted>"),
        None => (url, ""),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    format!("{base}{query}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn dumps_do_not_show_credentials() {
        assert_eq!(redact_url("http://h:1/p"), "http://h:1/p");
        assert_eq!(
            redact_url("https://u:pw@h/p/q?token=abc&x=1"),
            "https://<redacted>@h/p/q?<redacted>"
        );
        assert_eq!(redact_url("https://h/p@x"), "https://h/p@x");
    }
}
