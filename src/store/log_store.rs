//! The embedded default store: segment files, cursors and dead letters in one directory.
//! (Skeleton: the implementation lands in the next commit.)

use super::{
    DeadLetter, DeadLetterFilter, EndpointState, Recovery, Store, StoreConfig, StoreReader,
};
use crate::Error;

/// The embedded default [`Store`]: an append-only log of segment files in one directory.
#[derive(Debug)]
pub struct LogStore {
    recovery: Recovery,
}

impl LogStore {
    /// Opens (creating if needed) the store in `config.dir`, recovering what a crash left.
    pub fn open(config: StoreConfig) -> Result<LogStore, Error> {
        let _ = config;
        Err(Error::config("store", "not built yet"))
    }
}

impl Store for LogStore {
    fn append(&mut self, _mask: u64, _time_ms: u64, _payload: &[u8]) -> Result<u64, Error> {
        todo!()
    }
    fn commit(&mut self) -> Result<u64, Error> {
        todo!()
    }
    fn durable_through(&self) -> u64 {
        todo!()
    }
    fn next_seq(&self) -> u64 {
        todo!()
    }
    fn first_seq(&self) -> u64 {
        todo!()
    }
    fn used_bytes(&self) -> u64 {
        todo!()
    }
    fn quota_bytes(&self) -> u64 {
        todo!()
    }
    fn reader(&self) -> Result<Box<dyn StoreReader>, Error> {
        todo!()
    }
    fn endpoint(&mut self, _name: &str) -> Result<EndpointState, Error> {
        todo!()
    }
    fn endpoints(&self) -> Vec<(String, EndpointState)> {
        todo!()
    }
    fn save_cursors(&mut self, _acked: &[(u8, u64)]) -> Result<(), Error> {
        todo!()
    }
    fn dead_letter(&mut self, _letters: &[DeadLetter]) -> Result<(), Error> {
        todo!()
    }
    fn dead_letters(&self, _filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        todo!()
    }
    fn take_dead_letters(&mut self, _filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        todo!()
    }
    fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}
