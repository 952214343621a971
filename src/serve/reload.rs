//! Applying a new configuration to a running server (SIGHUP in `hookwire serve`).
//!
//! The loop thread applies it between requests, so no event is published while endpoints
//! change: an endpoint removed for a change is added back under the same name before the next
//! publish, and resumes from its cursor in the durable log, so nothing it had queued is lost
//! or delivered twice. Settings that need a restart (listen address, data directory, workers,
//! quota, dedup window) are kept as they are and named in the report.

use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::config::EndpointConfig;
use crate::engine::{Dispatcher, EndpointId};

use super::config::{Limits, ServeConfig};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReloadReport {
    /// Endpoints added, by name.
    pub added: Vec<String>,
    /// Endpoints removed (what they held in memory is delivered within the drain deadline;
    /// a durable endpoint's backlog stays in the log under its name).
    pub removed: Vec<String>,
    /// Endpoints whose settings changed (removed and added back under the same name).
    pub changed: Vec<String>,
    /// Endpoints left as they were.
    pub unchanged: usize,
    /// Settings that differ but need a restart, by name.
    pub needs_restart: Vec<&'static str>,
}

/// Whether two endpoint configurations are the same (`EndpointConfig` has no `PartialEq`: its
/// `Debug` shows every field).
fn same(a: &EndpointConfig, b: &EndpointConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Brings `endpoints` (name, config, id) to `new`'s endpoints on `dispatcher`. On an error the
/// endpoints already handled stay as they are now, and the one that failed keeps its old
/// configuration when it had one.
pub(crate) fn apply_endpoints(
    dispatcher: &Dispatcher,
    endpoints: &mut Vec<(EndpointConfig, EndpointId)>,
    new: &[EndpointConfig],
    drain: Duration,
    report: &mut ReloadReport,
) -> Result<(), Error> {
    let mut i = 0;
    while i < endpoints.len() {
        let name = endpoints[i].0.name.clone();
        if new.iter().any(|e| e.name == name) {
            i += 1;
            continue;
        }
        let (_, id) = endpoints.remove(i);
        dispatcher.remove_endpoint(id, drain)?;
        report.removed.push(name);
    }
    for e in new {
        match endpoints.iter().position(|(old, _)| old.name == e.name) {
            None => {
                let id = dispatcher.add_endpoint(e.clone())?;
                endpoints.push((e.clone(), id));
                report.added.push(e.name.clone());
            }
            Some(at) if same(&endpoints[at].0, e) => report.unchanged += 1,
            Some(at) if endpoints[at].0.durability != e.durability => {
                // Durable -> memory would strand its backlog in the log (and memory -> durable
                // starts a backlog the old one never had): kept as it runs. Take it out of the
                // file (and `POST /v1/endpoints/NAME/forget` it) to change it.
                log::warn!(
                    "reload: endpoint {:?} keeps its durability (`durable`): it cannot change \
                     while running; remove the endpoint, forget it, and add it back instead",
                    e.name
                );
                if !report.needs_restart.contains(&"endpoint.durable") {
                    report.needs_restart.push("endpoint.durable");
                }
                report.unchanged += 1;
            }
            Some(at) => {
                let (old, id) = endpoints.remove(at);
                dispatcher.remove_endpoint(id, drain)?;
                match dispatcher.add_endpoint(e.clone()) {
                    Ok(id) => {
                        endpoints.push((e.clone(), id));
                        report.changed.push(e.name.clone());
                    }
                    Err(err) => {
                        if let Ok(id) = dispatcher.add_endpoint(old.clone()) {
                            endpoints.push((old, id));
                        }
                        return Err(err);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The limits a running server takes from `new`, and the settings it cannot change.
pub(crate) fn apply_limits(
    running: &ServeConfig,
    limits: &mut Limits,
    new: &ServeConfig,
    report: &mut ReloadReport,
) {
    if new.listen != running.listen {
        report.needs_restart.push("listen");
    }
    if new.data_dir != running.data_dir {
        report.needs_restart.push("data_dir");
    }
    if new.database != running.database {
        report.needs_restart.push("database");
    }
    if new.workers != running.workers {
        report.needs_restart.push("workers");
    }
    if new.limits.quota_bytes != running.limits.quota_bytes {
        report.needs_restart.push("limits.quota_bytes");
    }
    if new.limits.dedup_window != running.limits.dedup_window {
        report.needs_restart.push("limits.dedup_window");
    }
    if new.limits.drain_timeout != running.limits.drain_timeout {
        report.needs_restart.push("limits.drain_timeout");
    }
    *limits = Limits {
        quota_bytes: limits.quota_bytes,
        dedup_window: limits.dedup_window,
        drain_timeout: limits.drain_timeout,
        ..new.limits.clone()
    };
}
