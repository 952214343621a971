//! Endpoint leases: which node delivers which endpoint (filled in by the lease manager).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The leases this node holds, as the store's cursor saves see them: a cursor is saved only
/// for an endpoint whose lease this node holds, and only while the database still says so
/// (owner and epoch match and it has not expired), so a node that lost a lease cannot move a
/// cursor the new holder owns.
#[derive(Debug)]
pub struct Fence {
    node: String,
    held: Mutex<HashMap<String, u64>>,
}

impl Fence {
    /// An empty fence for the node called `node`.
    pub fn new(node: impl Into<String>) -> Arc<Fence> {
        Arc::new(Fence {
            node: node.into(),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The node's name (the lease owner it writes).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The epoch of this node's lease on `endpoint`, if it holds one.
    pub fn epoch(&self, endpoint: &str) -> Option<u64> {
        self.held.lock().get(endpoint).copied()
    }

    /// Records that this node holds `endpoint` at `epoch` (`None`: no longer).
    pub fn set(&self, endpoint: &str, epoch: Option<u64>) {
        let mut held = self.held.lock();
        match epoch {
            Some(e) => {
                held.insert(endpoint.to_string(), e);
            }
            None => {
                held.remove(endpoint);
            }
        }
    }
}
