//! The service's configuration: a TOML file (or the same values built from flags), checked
//! whole before anything starts, mapped onto the engine's [`EndpointConfig`].
//!
//! Every mistake is a [`ConfigError`] that names the field (`endpoint[1].retry.base_ms`) and,
//! when it comes from the file, the line and column; nothing in a config can make the service
//! panic. Unknown keys are errors too: a typo must not silently fall back to a default.
//!
//! One difference from the library on purpose: an endpoint may connect to loopback, private
//! and link-local addresses only with `allow_private = true` (the library's default is `true`,
//! since a program chooses its own URLs; a service's config often comes from elsewhere).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{BatchConfig, Durability, EndpointConfig, Overflow, RetryConfig};
use crate::http::{MediaType, TlsOptions};
use crate::policy::{Backoff, BreakerConfig, RateLimit};

/// A configuration that could not be used: which field, where in the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The file it came from (`None` for flags or a string).
    pub file: Option<PathBuf>,
    /// The field, as a path (`listen`, `endpoint[0].url`, `limits.max_body_bytes`); the
    /// innermost key the TOML parser named for a syntax error, or `(syntax)` when it named none.
    pub field: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// 1-based column in the file, when known.
    pub column: Option<usize>,
    /// What is wrong, for a person.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.file {
            write!(f, "{}:", p.display())?;
        }
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        } else if self.file.is_some() {
            f.write_str(" ")?;
        }
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `field` (a flag, a key path), without a file position.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::field(field, reason)
    }

    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            field: field.into(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }

    fn at(mut self, src: &str, offset: usize) -> Self {
        let (l, c) = line_col(src, offset);
        self.line = Some(l);
        self.column = Some(c);
        self
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Limits that protect the service from its clients (all have defaults).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections at most; more are accepted and closed at once. Default 1024.
    pub max_connections: usize,
    /// A request's head (request line and headers) at most, in bytes; more: 431. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Headers per request at most; more: 431. Default 64.
    pub max_headers: usize,
    /// A request body at most, in bytes; more: 413. Default 10 MiB.
    pub max_body_bytes: usize,
    /// A request must arrive whole within this, from its first byte; else the connection is
    /// closed (slowloris). Default 10 s.
    pub read_timeout: Duration,
    /// A keep-alive connection with no request under way is closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// The longest wait for an ingest request's events to become durable; past it: 503.
    /// Default 30 s.
    pub ack_timeout: Duration,
    /// How many recent event ids are remembered to accept repeats without delivering them
    /// twice. Default 100,000.
    pub dedup_window: usize,
    /// The durable log's size limit in bytes; ingest answers 503 once it is reached. Default
    /// 1 GiB.
    pub quota_bytes: u64,
    /// The `Retry-After` (seconds) sent with a 503. Default 1.
    pub retry_after: u32,
    /// On shutdown, how long the engine may go on delivering before it stops (what is left
    /// stays in the durable log for the next start). Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            max_body_bytes: 10 << 20,
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(30),
            dedup_window: 100_000,
            quota_bytes: 1 << 30,
            retry_after: 1,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the endpoints' events are kept when several nodes share them: a PostgreSQL
/// database (top-level `database_url`, `schema`, `node` and `lease_ms` in the file;
/// `--database-url`, `--schema`, `--node`, `--lease` as flags).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatabaseConfig {
    /// The connection string (`postgres://user@host:5432/db`).
    pub url: String,
    /// The schema hookwire's tables live in. Default `hookwire`.
    pub schema: String,
    /// This node's name, unique among the nodes (default: host name and process id).
    pub node: Option<String>,
    /// How long an endpoint lease lasts without renewal. Default 10 s.
    pub lease: Duration,
}

impl DatabaseConfig {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseConfig {
            url: url.into(),
            schema: "hookwire".into(),
            node: None,
            lease: Duration::from_secs(10),
        }
    }

    /// Checks the schema name and the lease time.
    pub fn check(&self) -> Result<(), ConfigError> {
        let s = self.schema.as_bytes();
        if s.is_empty()
            || s.len() > 63
            || s[0].is_ascii_digit()
            || !s
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        {
            return Err(ConfigError::field(
                "schema",
                format!(
                    "{:?}: lower-case letters, digits and `_`, not starting with a digit, 1 to \
                     63 characters",
                    self.schema
                ),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.lease) {
            return Err(ConfigError::field("lease_ms", "must be 1 s to 1 h"));
        }
        if self
            .node
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 200)
        {
            return Err(ConfigError::field("node", "must be 1 to 200 bytes"));
        }
        Ok(())
    }
}

/// The whole service configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The durable log's directory (unused with a `database`).
    pub data_dir: PathBuf,
    /// A PostgreSQL database shared by several nodes, instead of the local log (feature
    /// `postgres`; docs/scale-out.md).
    pub database: Option<DatabaseConfig>,
    /// Bearer tokens accepted by the ingest routes; empty: ingest is open.
    pub tokens: Vec<String>,
    /// Bearer tokens for the admin routes (`/v1/endpoints`, `/debug/vars`); empty: open.
    pub admin_tokens: Vec<String>,
    /// Engine worker threads. Default 1.
    pub workers: usize,
    /// Limits.
    pub limits: Limits,
    /// The endpoints, each already checked.
    pub endpoints: Vec<EndpointConfig>,
}

impl ServeConfig {
    /// A configuration with default limits and no endpoints.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            listen,
            data_dir: data_dir.into(),
            database: None,
            tokens: Vec::new(),
            admin_tokens: Vec::new(),
            workers: 1,
            limits: Limits::default(),
            endpoints: Vec::new(),
        }
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            ..ConfigError::field("(file)", format!("cannot read it: {e}"))
        })?;
        ServeConfig::parse(&text).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            ..e
        })
    }

    /// Parses and checks a TOML document.
    pub fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let field = backticked(&message).unwrap_or_else(|| "(syntax)".into());
            let err = ConfigError::field(field, message);
            match e.span() {
                Some(span) => err.at(text, span.start),
                None => err,
            }
        })?;
        raw.check(text)
    }

    /// Adds an endpoint after checking it (for configurations built in code or from flags).
    pub fn add_endpoint(&mut self, endpoint: EndpointConfig) -> Result<(), ConfigError> {
        check_endpoint(&endpoint, &format!("endpoint[{}]", self.endpoints.len()))?;
        if self.endpoints.iter().any(|e| e.name == endpoint.name) {
            return Err(ConfigError::field(
                format!("endpoint[{}].name", self.endpoints.len()),
                format!("{:?} is used by another endpoint", endpoint.name),
            ));
        }
        self.endpoints.push(endpoint);
        Ok(())
    }
}

/// The first `name` in a serde message such as "unknown field `urll`, expected ...".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// An endpoint as the service builds it: durable, refusing private addresses.
pub fn service_endpoint(name: impl Into<String>, url: impl Into<String>) -> EndpointConfig {
    let mut e = EndpointConfig::new(name, url).durable();
    e.allow_private = false;
    e
}

fn check_endpoint(e: &EndpointConfig, at: &str) -> Result<(), ConfigError> {
    if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
        return Err(ConfigError::field(
            format!("{at}.url"),
            format!("{:?} is not an http:// or https:// URL", e.url),
        ));
    }
    e.validate().map(|_| ()).map_err(|err| match err {
        crate::Error::Config { field, reason } => {
            ConfigError::field(format!("{at}.{field}"), reason)
        }
        other => ConfigError::field(at.to_string(), other.to_string()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: toml::Spanned<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    schema: Option<String>,
    node: Option<String>,
    lease_ms: Option<u64>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    admin_tokens: Vec<String>,
    #[serde(default)]
    workers: Option<toml::Spanned<usize>>,
    #[serde(default)]
    limits: Option<toml::Spanned<RawLimits>>,
    #[serde(default)]
    endpoint: Vec<toml::Spanned<RawEndpoint>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<usize>,
    read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    ack_timeout_ms: Option<u64>,
    dedup_window: Option<usize>,
    quota_bytes: Option<u64>,
    retry_after_s: Option<u32>,
    drain_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: String,
    name: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    ignored_actions: Vec<String>,
    #[serde(default)]
    ignored_media_types: Vec<String>,
    /// Only events of these repositories (globs: `library/*`, `team/**`); empty: all.
    #[serde(default)]
    repositories: Vec<String>,
    media_type: Option<String>,
    capacity: Option<usize>,
    /// `true` (the default): durable; `false`: in memory, with `overflow`.
    durable: Option<bool>,
    overflow: Option<String>,
    batch: Option<RawBatch>,
    retry: Option<RawRetry>,
    max_attempts: Option<u32>,
    max_age_s: Option<u64>,
    tls: Option<RawTls>,
    rate_limit: Option<RawRate>,
    request_rate_limit: Option<RawRate>,
    max_in_flight: Option<usize>,
    adaptive_concurrency: Option<bool>,
    #[serde(default)]
    allow_private: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_events: Option<usize>,
    max_bytes: Option<usize>,
    linger_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    burst: Option<f64>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawRetry {
    /// docker distribution's: `threshold` failures in a row, then `backoff_ms`.
    ConsecutiveFailures {
        threshold: Option<u32>,
        backoff_ms: Option<u64>,
    },
    Exponential {
        base_ms: u64,
        factor: Option<u32>,
        max_ms: u64,
    },
    Schedule {
        delays_ms: Vec<u64>,
    },
    Breaker {
        consecutive_failures: Option<u32>,
        cooldown_ms: Option<u64>,
        max_cooldown_ms: Option<u64>,
        disable_after_ms: Option<u64>,
        backoff_ms: Option<u64>,
    },
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl RawConfig {
    fn check(self, text: &str) -> Result<ServeConfig, ConfigError> {
        let listen = self.listen.get_ref().parse::<SocketAddr>().map_err(|e| {
            ConfigError::field("listen", format!("{:?}: {e}", self.listen.get_ref()))
                .at(text, self.listen.span().start)
        })?;
        let database = match self.database_url {
            Some(url) => {
                let mut d = DatabaseConfig::new(url);
                if let Some(s) = self.schema {
                    d.schema = s;
                }
                d.node = self.node;
                if let Some(l) = self.lease_ms {
                    d.lease = ms(l);
                }
                d.check()?;
                Some(d)
            }
            None if self.schema.is_some() || self.node.is_some() || self.lease_ms.is_some() => {
                return Err(ConfigError::field(
                    "database_url",
                    "schema, node and lease_ms need a database_url",
                ));
            }
            None => None,
        };
        let data_dir = match (self.data_dir, &database) {
            (Some(d), _) => d,
            (None, Some(_)) => PathBuf::new(),
            (None, None) => {
                return Err(ConfigError::field(
                    "data_dir",
                    "missing: the durable log's directory (or a database_url)",
                ));
            }
        };
        let mut config = ServeConfig::new(listen, data_dir);
        config.database = database;
        if self.tokens.iter().chain(&self.admin_tokens).any(|t| {
            t.is_empty()
                || t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        }) {
            return Err(ConfigError::field(
                "tokens",
                "a token must be non-empty, without spaces or control characters",
            ));
        }
        config.tokens = self.tokens;
        config.admin_tokens = self.admin_tokens;
        if let Some(w) = self.workers {
            if !(1..=64).contains(w.get_ref()) {
                return Err(
                    ConfigError::field("workers", "must be 1 to 64").at(text, w.span().start)
                );
            }
            config.workers = *w.get_ref();
        }
        if let Some(l) = self.limits {
            let start = l.span().start;
            config.limits = l.into_inner().check().map_err(|e| e.at(text, start))?;
        }
        for (i, e) in self.endpoint.into_iter().enumerate() {
            let start = e.span().start;
            e.into_inner()
                .check(i)
                .and_then(|ep| config.add_endpoint(ep))
                .map_err(|err| err.at(text, start))?;
        }
        Ok(config)
    }
}

impl RawLimits {
    fn check(self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let positive = |field: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(ConfigError::field(
                format!("limits.{field}"),
                "must be more than 0",
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let duration = |field: &str, v: Option<u64>, default: Duration| match v {
            Some(0) => Err(ConfigError::field(
                format!("limits.{field}"),
                "must be more than 0",
            )),
            Some(v) if ms(v) > crate::config::MAX_DURATION => Err(ConfigError::field(
                format!("limits.{field}"),
                "is longer than a year",
            )),
            Some(v) => Ok(ms(v)),
            None => Ok(default),
        };
        let limits = Limits {
            max_connections: positive("max_connections", self.max_connections, d.max_connections)?,
            max_header_bytes: positive(
                "max_header_bytes",
                self.max_header_bytes,
                d.max_header_bytes,
            )?,
            max_headers: positive("max_headers", self.max_headers, d.max_headers)?,
            max_body_bytes: positive("max_body_bytes", self.max_body_bytes, d.max_body_bytes)?,
            read_timeout: duration("read_timeout_ms", self.read_timeout_ms, d.read_timeout)?,
            idle_timeout: duration("idle_timeout_ms", self.idle_timeout_ms, d.idle_timeout)?,
            ack_timeout: duration("ack_timeout_ms", self.ack_timeout_ms, d.ack_timeout)?,
            dedup_window: self.dedup_window.unwrap_or(d.dedup_window),
            quota_bytes: self.quota_bytes.unwrap_or(d.quota_bytes),
            retry_after: self.retry_after_s.unwrap_or(d.retry_after),
            drain_timeout: duration("drain_timeout_ms", self.drain_timeout_ms, d.drain_timeout)?,
        };
        if limits.max_header_bytes < 256 {
            return Err(ConfigError::field(
                "limits.max_header_bytes",
                "must be at least 256",
            ));
        }
        if limits.quota_bytes < 4096 {
            return Err(ConfigError::field(
                "limits.quota_bytes",
                "must be at least 4096",
            ));
        }
        Ok(limits)
    }
}

impl RawEndpoint {
    fn check(self, i: usize) -> Result<EndpointConfig, ConfigError> {
        let at = format!("endpoint[{i}]");
        let f = |field: &str, reason: String| ConfigError::field(format!("{at}.{field}"), reason);
        let name = self.name.unwrap_or_else(|| format!("endpoint-{i}"));
        let mut e = service_endpoint(name, self.url);
        e.allow_private = self.allow_private;
        e.secrets = self.secrets;
        e.headers = self.headers.into_iter().collect();
        for (k, v) in &e.headers {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                || v.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                return Err(f("headers", format!("{k:?} is not a valid header")));
            }
        }
        if let Some(t) = self.timeout_ms {
            e.timeout = ms(t);
        }
        e.connect_timeout = self.connect_timeout_ms.map(ms);
        e.ignored_actions = self.ignored_actions;
        e.ignored_media_types = self.ignored_media_types;
        e.repositories = self.repositories;
        if let Some(m) = self.media_type {
            e.media_type = match m.as_str() {
                "v1" | "application/vnd.docker.distribution.events.v1+json" => MediaType::V1,
                "v2" | "application/vnd.docker.distribution.events.v2+json" => MediaType::V2,
                _ => return Err(f("media_type", format!("{m:?}: expected \"v1\" or \"v2\""))),
            };
        }
        if let Some(c) = self.capacity {
            e.capacity = c;
        }
        if self.durable == Some(false) {
            // A memory endpoint drops what does not fit (counted), never refuses: a refusal
            // would fail the whole request after the durable endpoints stored the event, and
            // the sender's retry would store it again.
            e.durability = Durability::Memory;
            e.overflow = Overflow::DropOldest;
        }
        if let Some(o) = self.overflow {
            e.overflow = match (o.as_str(), e.durability) {
                ("spill", Durability::Durable) => Overflow::Spill,
                (_, Durability::Durable) => {
                    return Err(f(
                        "overflow",
                        format!(
                            "{o:?}: a durable endpoint keeps its backlog on disk (\"spill\"); set durable = false for another policy"
                        ),
                    ));
                }
                ("drop_newest", _) => Overflow::DropNewest,
                ("drop_oldest", _) => Overflow::DropOldest,
                ("reject" | "block", _) => {
                    return Err(f(
                        "overflow",
                        format!(
                            "{o:?}: a memory endpoint of hookwire serve drops what does not fit \
                             (drop_newest or drop_oldest, counted); refusing or waiting would \
                             fail requests whose events the durable endpoints already stored"
                        ),
                    ));
                }
                _ => {
                    return Err(f(
                        "overflow",
                        format!(
                            "{o:?}: expected drop_newest or drop_oldest (memory) or spill (durable)"
                        ),
                    ));
                }
            };
        }
        if let Some(b) = self.batch {
            let d = BatchConfig::default();
            e.batch = BatchConfig {
                max_events: b.max_events.unwrap_or(d.max_events),
                max_bytes: b.max_bytes.unwrap_or(d.max_bytes),
                linger: b.linger_ms.map_or(d.linger, ms),
                ..d
            };
        }
        if let Some(r) = self.retry {
            e.retry = match r {
                RawRetry::ConsecutiveFailures {
                    threshold,
                    backoff_ms,
                } => {
                    if let Some(t) = threshold {
                        e.threshold = t;
                    }
                    if let Some(b) = backoff_ms {
                        e.backoff = ms(b);
                    }
                    RetryConfig::ConsecutiveFailures
                }
                RawRetry::Exponential {
                    base_ms,
                    factor,
                    max_ms,
                } => RetryConfig::Exponential {
                    base: ms(base_ms),
                    factor: factor.unwrap_or(2),
                    max: ms(max_ms),
                },
                RawRetry::Schedule { delays_ms } => {
                    RetryConfig::Schedule(delays_ms.into_iter().map(ms).collect())
                }
                RawRetry::Breaker {
                    consecutive_failures,
                    cooldown_ms,
                    max_cooldown_ms,
                    disable_after_ms,
                    backoff_ms,
                } => {
                    let mut breaker = BreakerConfig::default();
                    if let Some(n) = consecutive_failures {
                        breaker.consecutive_failures = Some(n);
                    }
                    if let Some(c) = cooldown_ms {
                        breaker.cooldown = ms(c);
                    }
                    breaker.max_cooldown = max_cooldown_ms.map(ms);
                    breaker.disable_after = disable_after_ms.map(ms);
                    breaker
                        .validate()
                        .map_err(|err| f("retry", err.to_string()))?;
                    RetryConfig::CircuitBreaker {
                        breaker,
                        backoff: Backoff::Constant(ms(backoff_ms.unwrap_or(1000))),
                    }
                }
            };
            // The strategies check their own parameters: build one to find out now.
            crate::config::strategy::<()>(&e).map_err(|err| f("retry", err.to_string()))?;
        }
        e.max_attempts = self.max_attempts;
        e.max_age = self.max_age_s.map(Duration::from_secs);
        if let Some(t) = self.tls {
            let mut tls = TlsOptions {
                insecure: t.insecure,
                ..TlsOptions::default()
            };
            if let Some(path) = t.ca_file {
                tls.ca_pem = Some(std::fs::read_to_string(&path).map_err(|err| {
                    f(
                        "tls.ca_file",
                        format!("cannot read {}: {err}", path.display()),
                    )
                })?);
            }
            e.tls = tls;
        }
        let rate = |r: RawRate| RateLimit {
            per_second: r.per_second,
            burst: r.burst.unwrap_or(r.per_second.max(1.0)),
        };
        e.rate_limit = self.rate_limit.map(rate);
        e.request_rate_limit = self.request_rate_limit.map(rate);
        if let Some(n) = self.max_in_flight {
            e.max_in_flight = n;
        }
        if let Some(a) = self.adaptive_concurrency {
            e.adaptive_concurrency = a;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "/var/lib/hookwire"
tokens = ["t1"]

[limits]
max_body_bytes = 1024
read_timeout_ms = 500

[[endpoint]]
name = "audit"
url = "http://127.0.0.1:9000/hook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
headers = { X-Team = "infra" }
batch = { max_events = 50, linger_ms = 5 }
retry = { kind = "exponential", base_ms = 100, max_ms = 5000 }
rate_limit = { per_second = 100 }
max_in_flight = 2
allow_private = true
repositories = ["library/*", "team/**"]

[[endpoint]]
url = "https://hooks.example.com/x"
tls = { insecure = true }
durable = false
overflow = "drop_oldest"
"#;

    #[test]
    fn a_full_file_maps_onto_endpoint_configs() {
        let c = ServeConfig::parse(FULL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.tokens, ["t1"]);
        assert_eq!(c.limits.max_body_bytes, 1024);
        assert_eq!(c.limits.read_timeout, Duration::from_millis(500));
        assert_eq!(
            c.limits.max_header_bytes,
            Limits::default().max_header_bytes
        );
        let [a, b] = &c.endpoints[..] else {
            panic!("two endpoints")
        };
        assert_eq!(a.name, "audit");
        assert_eq!(a.durability, Durability::Durable);
        assert_eq!(a.overflow, Overflow::Spill);
        assert!(a.allow_private);
        assert_eq!(a.batch.max_events, 50);
        assert_eq!(a.batch.linger, Duration::from_millis(5));
        assert_eq!(a.headers, [("X-Team".to_string(), "infra".to_string())]);
        assert!(matches!(
            a.retry,
            RetryConfig::Exponential { factor: 2, .. }
        ));
        assert_eq!(a.rate_limit.unwrap().per_second, 100.0);
        assert_eq!(a.max_in_flight, 2);
        assert_eq!(a.repositories, ["library/*", "team/**"]);
        assert!(b.repositories.is_empty(), "every repository by default");
        assert_eq!(b.name, "endpoint-1");
        assert!(
            !b.allow_private,
            "serve refuses private addresses by default"
        );
        assert!(b.tls.insecure);
        assert_eq!(b.durability, Durability::Memory);
        assert_eq!(b.overflow, Overflow::DropOldest);
    }

    fn err(text: &str) -> ConfigError {
        ServeConfig::parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_field_with_line_and_column() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n";
        // An unknown key (a typo) in the second endpoint.
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\n[[endpoint]]\nurll = \"http://b/\"\n"
        ));
        assert_eq!(e.field, "urll", "{e}");
        assert_eq!(e.line, Some(6), "{e}");
        // A syntax error.
        let e = err("listen = \"127.0.0.1:1\"\ndata_dir = \n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.column.is_some());
        // A bad address.
        let e = err("data_dir = \"/d\"\nlisten = \"nowhere\"\n");
        assert_eq!(
            (e.field.as_str(), e.line, e.column),
            ("listen", Some(2), Some(10))
        );
        // Semantic errors inside an endpoint name the path and point at its table.
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\nmax_in_flight = 0\n"
        ));
        assert_eq!(e.field, "endpoint[0].max_in_flight", "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        let e = err(&format!("{base}[[endpoint]]\nurl = \"ftp://a/\"\n"));
        assert_eq!(e.field, "endpoint[0].url", "{e}");
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\noverflow = \"drop_oldest\"\n"
        ));
        assert_eq!(e.field, "endpoint[0].overflow", "{e}");
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\nretry = {{ kind = \"exponential\", base_ms = 0, max_ms = 1 }}\n"
        ));
        assert_eq!(e.field, "endpoint[0].retry", "{e}");
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\nsecrets = [\"nope\"]\n"
        ));
        assert!(e.field.starts_with("endpoint[0]"), "{e}");
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\nname = \"x\"\n[[endpoint]]\nurl = \"http://b/\"\nname = \"x\"\n"
        ));
        assert_eq!(e.field, "endpoint[1].name", "{e}");
        let e = err(&format!("{base}[limits]\nmax_body_bytes = 0\n"));
        assert_eq!(e.field, "limits.max_body_bytes", "{e}");
        let e = err(&format!(
            "{base}[[endpoint]]\nurl = \"http://a/\"\ntls = {{ ca_file = \"/nonexistent/ca.pem\" }}\n"
        ));
        assert_eq!(e.field, "endpoint[0].tls.ca_file", "{e}");
        let e = err("data_dir = \"/d\"\n");
        assert!(e.reason.contains("listen"), "{e}");
        assert!(e.to_string().contains("listen"), "{e}");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("x", 99), (1, 2));
    }
}
