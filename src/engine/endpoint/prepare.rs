//! An endpoint's configuration, checked and turned into what its state machine needs: the
//! parsed and resolved target, the static headers, the signer, the retry strategy, the
//! timeouts. Built on the thread that adds the endpoint (it resolves the host: blocking DNS),
//! never on a worker.

use crate::Error;
use crate::config::{BatchConfig, EndpointConfig, MAX_DURATION, Overflow};
use crate::http::conn::Timeouts;
use crate::http::target::Target;
use crate::http::{Secret, Signer};
use crate::policy::{Adaptive, AdaptiveConfig, RetryStrategy, TokenBucket};

/// How long an unused keep-alive connection is kept.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Headers the endpoint sets itself; a configured header may not replace them.
const RESERVED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "upgrade",
];

/// An endpoint's configuration, checked and resolved on the caller's thread.
pub(crate) struct Prepared {
    /// Where requests go.
    pub target: Target,
    /// Headers sent with every request (`User-Agent`, `Content-Type`, the configured ones).
    pub headers: Vec<(String, String)>,
    /// Signs requests, if secrets are configured.
    pub signer: Option<Signer>,
    /// How events are grouped into requests.
    pub batch: BatchConfig,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Connect, request and idle timeouts.
    pub timeouts: Timeouts,
    /// What to do before each attempt and after each failure.
    pub strategy: Box<dyn RetryStrategy<()>>,
    /// Events held in memory at most.
    pub capacity: usize,
    /// What a full endpoint does.
    pub overflow: Overflow,
    /// Events per second, and requests per second, if limited.
    pub rate: Option<TokenBucket>,
    pub request_rate: Option<TokenBucket>,
    /// How many requests may be in flight, if learnt.
    pub adaptive: Option<Adaptive>,
}

impl Prepared {
    /// Checks what `validate` does not, parses the URL and resolves its host (blocking DNS,
    /// which is why this runs in `add_endpoint` and never in a worker).
    pub fn new(config: &EndpointConfig, secrets: Vec<Secret>) -> Result<Self, Error> {
        for (field, d) in [
            ("timeout", Some(config.timeout)),
            ("connect_timeout", config.connect_timeout),
        ] {
            if let Some(d) = d
                && (d.is_zero() || d > MAX_DURATION)
            {
                return Err(Error::config(
                    field,
                    format!("{d:?} must be more than zero and at most a year"),
                ));
            }
        }
        if let Overflow::Block { timeout: Some(d) } = config.overflow
            && (d.is_zero() || d > MAX_DURATION)
        {
            return Err(Error::config(
                "overflow",
                format!("a Block timeout of {d:?} must be more than zero and at most a year"),
            ));
        }
        if config.capacity == 0 {
            return Err(Error::config("capacity", "must be at least 1"));
        }
        let target = Target::parse(&config.url, &config.tls)?.guard(config.allow_private)?;
        let mut headers = vec![(
            "User-Agent".to_string(),
            concat!("hookwire/", env!("CARGO_PKG_VERSION")).to_string(),
        )];
        if !config
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), config.media_type.as_str().into()));
        }
        for (name, value) in &config.headers {
            let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(Error::config(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                return Err(Error::config(
                    "headers",
                    format!("{name} is set by hookwire itself"),
                ));
            }
            if value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
                return Err(Error::config(
                    "headers",
                    format!("the value of {name} is not a valid header value"),
                ));
            }
            headers.push((name.clone(), value.clone()));
        }
        let signer = if secrets.is_empty() {
            None
        } else {
            Some(Signer::new(secrets)?)
        };
        Ok(Prepared {
            target,
            headers,
            signer,
            batch: config.batch,
            max_in_flight: config.max_in_flight,
            timeouts: Timeouts {
                connect: config.connect_timeout.unwrap_or(config.timeout),
                request: config.timeout,
                idle: IDLE,
            },
            strategy: crate::config::strategy::<()>(config)?,
            capacity: config.capacity,
            overflow: config.overflow,
            rate: config.rate_limit.map(TokenBucket::new),
            request_rate: config.request_rate_limit.map(TokenBucket::new),
            adaptive: config
                .adaptive_concurrency
                .then(|| Adaptive::new(AdaptiveConfig::up_to(config.max_in_flight))),
        })
    }
}
