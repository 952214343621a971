//! The ids a receiver has received, in arrival order, each told apart as a first arrival or
//! a repeat.
//!
//! A `HashSet<String>` beside a `Vec<String>` cost two allocations, a SipHash of the id on
//! every insert and again on every rehash, and a table of fat pointers into scattered heap
//! strings: at 500,000 ids that was as much of the receiver's time as reading the JSON.
//! Here ids are appended to one string (a store and no allocation, in the common case), and
//! the set holds each distinct id's hash, computed once, with the index of the id it came
//! from; ids are compared only when hashes are equal. Two different ids with the same 64-bit
//! hash (a seeded SipHash, as `HashMap`'s, so not arranged by a sender) are still told apart:
//! the later one goes to a small set of its own.
//!
//! Appending and classifying are separate steps: appending is cheap, while a probe of a set of
//! 500,000 hashes misses the cache and costs more than reading the id did. The receiver appends
//! before it answers and classifies after (its readers classify first), so the sender does not
//! wait for the set.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// Every id received, in order, and which were new. Memory grows with the ids received
/// (their bytes plus about 30 bytes each), as a receiver that reports them must.
pub(super) struct Arrivals<S = RandomState> {
    /// Every id, concatenated in arrival order.
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
    /// Hash of each distinct id -> the index of the first id with that hash.
    first: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
    /// Distinct ids whose hash an earlier, different id already had.
    collided: HashSet<Box<str>>,
    /// How many of the ids (the first ones) are classified.
    classified: usize,
    hasher: S,
}

impl Default for Arrivals<RandomState> {
    fn default() -> Self {
        Arrivals::with_hasher(RandomState::new())
    }
}

impl<S: BuildHasher> Arrivals<S> {
    pub(super) fn with_hasher(hasher: S) -> Self {
        Arrivals {
            text: String::new(),
            ends: Vec::new(),
            first: HashMap::default(),
            collided: HashSet::new(),
            classified: 0,
            hasher,
        }
    }

    /// Appends `id`, to be classified by the next [`Arrivals::classify`].
    pub(super) fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    /// Tells each id appended since the last call a first arrival or a repeat (of any id
    /// before it, in the same batch or earlier). Returns how many were of each.
    pub(super) fn classify(&mut self) -> Classified {
        let Arrivals {
            text,
            ends,
            first,
            collided,
            classified,
            hasher,
        } = self;
        let id = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &text[start..ends[i]]
        };
        let mut counts = Classified::default();
        for i in *classified..ends.len() {
            let this = id(i);
            // One probe of the table per id: it is large and its slots are where time goes.
            let new = match first.entry(hasher.hash_one(this)) {
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    true
                }
                Entry::Occupied(slot) => {
                    id(*slot.get()) != this
                        && !collided.contains(this)
                        && collided.insert(this.into())
                }
            };
            if new {
                counts.first += 1;
            } else {
                counts.repeats += 1;
            }
        }
        *classified = ends.len();
        counts
    }

    /// The `i`th id to arrive.
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// Every id, in arrival order, repeats included.
    pub(super) fn to_vec(&self) -> Vec<String> {
        (0..self.ends.len())
            .map(|i| self.get(i).to_owned())
            .collect()
    }
}

/// What [`Arrivals::classify`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Classified {
    /// Ids that had not arrived before.
    pub(super) first: u64,
    /// Ids that had.
    pub(super) repeats: u64,
}

/// The hasher of a map keyed by hashes: the key is its own hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not used by `u64` keys; folds the bytes in so that the hasher is still a hasher.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every id hashes the same: every distinct id after the first is a collision.
    #[derive(Clone, Default)]
    struct Constant;

    impl BuildHasher for Constant {
        type Hasher = Prehashed;
        fn build_hasher(&self) -> Prehashed {
            Prehashed(7)
        }
    }

    fn counts(first: u64, repeats: u64) -> Classified {
        Classified { first, repeats }
    }

    #[test]
    fn tells_first_arrivals_from_repeats_in_order() {
        let mut a = Arrivals::default();
        for id in ["a", "b", "a", ""] {
            a.push(id);
        }
        assert_eq!(a.classify(), counts(3, 1));
        assert_eq!(a.classify(), counts(0, 0), "each id is classified once");
        for id in ["ab", "b", ""] {
            a.push(id);
        }
        assert_eq!(a.classify(), counts(1, 2));
        assert_eq!(a.to_vec(), ["a", "b", "a", "", "ab", "b", ""]);
    }

    #[test]
    fn equal_hashes_of_different_ids_are_still_distinct() {
        let mut a = Arrivals::with_hasher(Constant);
        for id in ["x", "y", "z", "y"] {
            a.push(id);
        }
        assert_eq!(a.classify(), counts(3, 1));
        a.push("x");
        a.push("z");
        assert_eq!(a.classify(), counts(0, 2));
        assert_eq!(a.to_vec(), ["x", "y", "z", "y", "x", "z"]);
    }

    proptest! {
        /// The same answers as a `HashSet<String>`, with a real hasher and with one where
        /// every hash collides, whatever the batches.
        #[test]
        fn agrees_with_a_hash_set(
            ids in prop::collection::vec(("[a-c]{0,3}", any::<bool>()), 0..64),
        ) {
            let mut real = Arrivals::default();
            let mut colliding = Arrivals::with_hasher(Constant);
            let mut set = HashSet::new();
            let mut want = Classified::default();
            for (id, end_batch) in &ids {
                if set.insert(id.clone()) {
                    want.first += 1;
                } else {
                    want.repeats += 1;
                }
                real.push(id);
                colliding.push(id);
                if *end_batch {
                    prop_assert_eq!(real.classify(), want);
                    prop_assert_eq!(colliding.classify(), want);
                    want = Classified::default();
                }
            }
            prop_assert_eq!(real.classify(), want);
            prop_assert_eq!(colliding.classify(), want);
            let all: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
            prop_assert_eq!(real.to_vec(), all.clone());
            prop_assert_eq!(colliding.to_vec(), all);
        }
    }
}
