//! Several `hookwire serve` nodes sharing one PostgreSQL database (`database_url`): the store,
//! the endpoint leases, and what the HTTP routes say about them. See `docs/scale-out.md`.

use std::sync::Arc;

use serde_json::Value;

use crate::Error;
use crate::engine::{Dispatcher, DispatcherBuilder};

use super::config::ServeConfig;

/// What the HTTP loop asks of the cluster.
pub(crate) trait Cluster: Send + Sync {
    /// Whether the database answered in time to keep this node's leases.
    fn healthy(&self) -> bool;
    /// This node, the live nodes and every endpoint's lease, for `/v1/endpoints`.
    fn view(&self) -> Value;
    /// The durable endpoints to share from now on (a reload).
    fn set_endpoints(&self, names: Vec<String>);
    /// Stops taking events from the outbox (before the engine's shutdown).
    fn stop_relay(&self);
    /// Gives the leases back (after the engine's shutdown).
    fn stop(&self);
}

/// Starts the lease manager once the endpoints are added (registered in the database).
pub(crate) type StartCluster =
    Box<dyn FnOnce(&Arc<Dispatcher>, Vec<String>) -> Result<Arc<dyn Cluster>, Error>>;

/// The engine for `config`: the local log, or with a database, a PostgreSQL store shared
/// with the other nodes, and how to start the lease manager that decides which endpoints
/// this node delivers.
pub(crate) fn engine(
    config: &ServeConfig,
    builder: DispatcherBuilder,
) -> Result<(Dispatcher, Option<StartCluster>), Error> {
    let Some(db) = &config.database else {
        let mut store = crate::store::StoreConfig::new(&config.data_dir);
        store.quota_bytes = config.limits.quota_bytes;
        // The store needs at least two segments under the quota; four keep removal steady.
        store.segment_bytes = store.segment_bytes.min(store.quota_bytes / 4);
        return Ok((builder.store_config(store).build()?, None));
    };
    #[cfg(feature = "postgres")]
    {
        pg::engine(db, builder)
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (db, builder);
        Err(Error::config(
            "database_url",
            "this build has no PostgreSQL support (cargo feature `postgres`)",
        ))
    }
}

/// The names of the durable endpoints of `config`.
pub(crate) fn durable_names(config: &ServeConfig) -> Vec<String> {
    config
        .endpoints
        .iter()
        .filter(|e| e.durability == crate::config::Durability::Durable)
        .map(|e| e.name.clone())
        .collect()
}

#[cfg(feature = "postgres")]
mod pg {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use serde_json::{Value, json};

    use super::{Cluster, StartCluster};
    use crate::Error;
    use crate::engine::{Dispatcher, DispatcherBuilder};
    use crate::serve::config::DatabaseConfig;
    use crate::store::pg::{Fence, LeaseManager, LeaseOptions, OutboxRelay, PgConfig, PgStore};

    struct Manager {
        leases: Mutex<Option<LeaseManager>>,
        relay: Mutex<Option<OutboxRelay>>,
    }

    impl Cluster for Manager {
        fn healthy(&self) -> bool {
            self.leases
                .lock()
                .as_ref()
                .is_some_and(LeaseManager::healthy)
        }

        fn view(&self) -> Value {
            let mut v = match self.leases.lock().as_ref() {
                Some(m) => serde_json::to_value(m.view()).unwrap_or_default(),
                None => json!({ "stopped": true }),
            };
            if let Some(r) = self.relay.lock().as_ref() {
                v["outbox"] = serde_json::to_value(r.stats()).unwrap_or_default();
            }
            v
        }

        fn set_endpoints(&self, names: Vec<String>) {
            if let Some(m) = self.leases.lock().as_ref() {
                m.set_endpoints(names);
            }
        }

        fn stop_relay(&self) {
            if let Some(r) = self.relay.lock().take() {
                r.stop();
            }
        }

        fn stop(&self) {
            self.stop_relay();
            if let Some(m) = self.leases.lock().take() {
                m.stop();
            }
        }
    }

    pub(super) fn engine(
        db: &DatabaseConfig,
        builder: DispatcherBuilder,
    ) -> Result<(Dispatcher, Option<StartCluster>), Error> {
        let pg = PgConfig::new(db.url.clone()).schema(db.schema.clone());
        let mut options =
            LeaseOptions::new(db.node.clone().unwrap_or_else(LeaseOptions::default_node));
        options.ttl = db.lease;
        let fence = Fence::new(options.node.clone());
        let store = PgStore::open(&pg, Some(fence.clone()))?;
        let dispatcher = builder.store(store).leases(true).build()?;
        let start: StartCluster = Box::new(move |dispatcher: &Arc<Dispatcher>, names| {
            let board = dispatcher
                .lease_board()
                .expect("built with leases and a store");
            let manager = LeaseManager::start(&pg, &options, board, fence, names)?;
            // Host programs' transactional outbox, relayed by whichever node gets to it.
            let relay = OutboxRelay::start(&pg, dispatcher.clone())?;
            log::info!(
                "hookwire serve: node {:?} shares the endpoints through {} (schema {})",
                options.node,
                pg.redacted(),
                pg.schema
            );
            Ok(Arc::new(Manager {
                leases: Mutex::new(Some(manager)),
                relay: Mutex::new(Some(relay)),
            }) as Arc<dyn Cluster>)
        });
        Ok((dispatcher, Some(start)))
    }
}
