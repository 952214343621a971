//! `hookwire serve`: the relay service (`hookwire::serve`) from a config file or from flags.
//!
//! With `--listen 127.0.0.1:0` the bound address is the first stdout line,
//! `{"listening":"127.0.0.1:PORT"}`. SIGTERM or SIGINT stops accepting (ingest answers 503),
//! answers the requests already waiting for durability, lets the engine deliver until the
//! drain deadline (what is left stays in the durable log for the next start), prints a JSON
//! summary line and exits 0. SIGHUP reads `--config` again and applies it (a bad file keeps
//! the running configuration); one line on stderr says what changed or why not.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hookwire::Error;
use hookwire::serve::{ConfigError, DatabaseConfig, Handle, ServeConfig, Server, service_endpoint};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::options::default_name;

/// `hookwire serve` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file (docs/serve.md); the other flags are then not allowed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "data_dir", "endpoint", "name", "secret", "secret_file", "token", "allow_private"])]
    pub config: Option<PathBuf>,
    /// Where to listen (`127.0.0.1:0` picks a free port and prints it).
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// The durable log's directory (created if missing; a restart resumes from it).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["config", "database_url"])]
    pub data_dir: Option<PathBuf>,
    /// Share the endpoints with other nodes through this PostgreSQL database
    /// (`postgres://user@host:5432/db`) instead of a local log (docs/scale-out.md). With
    /// `--config`, it overrides the file's `database_url`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The schema hookwire's tables live in (default `hookwire`; overrides the file's).
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
    /// This node's name among those sharing the database (default: host name and pid;
    /// overrides the file's `node`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// How long an endpoint lease lasts without renewal (`10s` by default); a dead node's
    /// endpoints move to the others after about this long.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::secs_arg)]
    pub lease: Option<u64>,
    /// A webhook URL to relay to (repeat for several).
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoint: Vec<String>,
    /// The name of the endpoint given at the same position (default: its host:port).
    #[arg(long = "name", value_name = "NAME")]
    pub name: Vec<String>,
    /// A Standard Webhooks secret (`whsec_...`) to sign with; repeat to rotate.
    /// (Checked by `secrets::resolve`, which never prints a rejected value; also read from
    /// `HOOKWIRE_SECRET` when no `--secret` is given, to keep it out of `ps`.)
    #[arg(long = "secret", value_name = "SECRET")]
    pub secret: Vec<String>,
    /// Secrets to sign with, one per line, from a file (keeps them out of `ps`).
    #[arg(long = "secret-file", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// A bearer token ingest requires (repeat for several); none: ingest is open.
    #[arg(long = "token", value_name = "TOKEN")]
    pub token: Vec<String>,
    /// Let the endpoints connect to loopback and private addresses (refused by default).
    #[arg(long)]
    pub allow_private: bool,
}

/// The configuration the flags describe.
pub(crate) fn config_from_flags(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => flags_config(args)?,
    };
    if let Some(url) = &args.database_url {
        let mut db = config
            .database
            .take()
            .unwrap_or_else(|| DatabaseConfig::new(url.clone()));
        db.url = url.clone();
        config.database = Some(db);
    }
    if let Some(mut db) = config.database.take() {
        if let Some(s) = &args.schema {
            db.schema = s.clone();
        }
        if args.node.is_some() {
            db.node = args.node.clone();
        }
        if let Some(l) = args.lease {
            db.lease = std::time::Duration::from_secs(l);
        }
        db.check()?;
        config.database = Some(db);
    } else if args.schema.is_some() || args.node.is_some() || args.lease.is_some() {
        return Err(flag_error(
            "--database-url",
            "--schema, --node and --lease need a database (--database-url or database_url)",
        ));
    }
    Ok(config)
}

fn flags_config(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let Some(listen) = args.listen else {
        unreachable!("clap requires --listen without --config")
    };
    let mut config = ServeConfig::new(listen, args.data_dir.clone().unwrap_or_default());
    config.tokens = args.token.clone();
    if args.name.len() > args.endpoint.len() {
        return Err(flag_error("--name", "more --name than --endpoint flags"));
    }
    let secrets = crate::secrets::resolve(
        &args.secret,
        args.secret_file.as_deref(),
        std::env::var(crate::secrets::ENV).ok(),
    )
    .map_err(|e| match e {
        Error::Config { field, reason } => flag_error(field, &reason),
        other => flag_error("--secret", &other.to_string()),
    })?;
    for (i, url) in args.endpoint.iter().enumerate() {
        let name = args
            .name
            .get(i)
            .cloned()
            .unwrap_or_else(|| default_name(url));
        let mut e = service_endpoint(name, url.clone());
        e.secrets = secrets.clone();
        e.allow_private = args.allow_private;
        config.add_endpoint(e)?;
    }
    Ok(config)
}

fn flag_error(flag: &str, reason: &str) -> ConfigError {
    ConfigError::new(flag, reason)
}

/// SIGHUP: reads the file again (with the same flags over it: `--database-url`, `--node`...)
/// and applies it; a bad file keeps the running configuration. Says what happened on stderr,
/// one line.
fn reload(handle: &Handle, args: &ServeArgs) {
    if args.config.is_none() {
        eprintln!("hookwire serve: SIGHUP ignored: started without --config, nothing to reload");
        return;
    }
    match config_from_flags(args) {
        Err(e) => eprintln!("hookwire serve: reload refused, the running configuration stays: {e}"),
        Ok(config) => match handle.reload(config, std::time::Duration::from_secs(120)) {
            Ok(report) => eprintln!(
                "hookwire serve: reloaded: {}",
                serde_json::to_string(&report).unwrap_or_default()
            ),
            Err(e) => eprintln!("hookwire serve: reload failed part way: {e}"),
        },
    }
}

pub(crate) fn main(args: &ServeArgs) -> Result<ExitCode, Error> {
    let config = match config_from_flags(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookwire serve: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
        eprintln!(
            "hookwire serve: warning: ingest is open to anyone who can reach {} (no tokens configured)",
            config.listen
        );
    }
    if config.admin_tokens.is_empty() && !config.listen.ip().is_loopback() {
        eprintln!(
            "hookwire serve: warning: the admin routes (dead letters with their events, replay, \
             forget, disable, the status page) are open to anyone who can reach {} (no \
             admin_tokens configured)",
            config.listen
        );
    }
    let server = Server::start(config)?;
    let handle = server.handle();
    let flags = args.clone();
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("hookwire-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    handle.stop();
                    return;
                }
                reload(&handle, &flags);
            }
        })?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "listening": server.local_addr().to_string() })
        )?;
        out.flush()?;
    }
    let report = server.wait();
    let endpoints: Vec<_> = report
        .endpoints
        .iter()
        .map(|e| serde_json::json!({ "name": e.name, "delivered": e.metrics.delivered, "pending": e.metrics.pending }))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "stopped": true, "drained": report.drained, "kept": report.kept, "endpoints": endpoints })
    );
    Ok(ExitCode::SUCCESS)
}
