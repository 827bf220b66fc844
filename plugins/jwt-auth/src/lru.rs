//! A bounded map that evicts the least recently used entry: a hash map into a slab of
//! entries chained most- to least-recently used by index, so lookups, inserts and
//! evictions are O(1) and the slab never grows past the capacity.
//! (The `lru` crate does the same with raw pointers; this one is safe code.)

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

const NIL: usize = usize::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

pub struct Lru<K, V, S = RandomState> {
    index: HashMap<K, usize, S>,
    slots: Vec<Slot<K, V>>,
    /// Slots whose entry was removed, reused before the slab grows.
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V> Lru<K, V> {
    /// A map holding at most `capacity` entries (0: holds nothing).
    #[cfg(test)]
    pub fn new(capacity: usize) -> Lru<K, V> {
        Lru::with_hasher(capacity, RandomState::new())
    }
}

impl<K: Hash + Eq + Copy, V, S: BuildHasher> Lru<K, V, S> {
    /// A map holding at most `capacity` entries (0: holds nothing), hashing keys with
    /// `hasher`.
    pub fn with_hasher(capacity: usize, hasher: S) -> Lru<K, V, S> {
        Lru {
            index: HashMap::with_hasher(hasher),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub fn contains(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// The entry, now the most recently used.
    #[cfg(test)]
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let at = self.touch(key)?;
        self.at(at)
    }

    /// Where the entry is, now the most recently used: [`get`](Self::get) for a caller
    /// that may [`remove`](Self::remove) it after reading it ([`at`](Self::at)).
    pub fn touch(&mut self, key: &K) -> Option<usize> {
        let at = *self.index.get(key)?;
        self.unlink(at);
        self.link_newest(at);
        Some(at)
    }

    /// The entry [`touch`](Self::touch) found, while nothing was inserted or removed since.
    pub fn at(&self, at: usize) -> Option<&V> {
        self.slots.get(at).map(|s| &s.value)
    }

    /// Removes the entry; its slot (and value, until reused) stays for the next insert.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(at) = self.index.remove(key) else { return false };
        self.unlink(at);
        self.free.push(at);
        true
    }

    /// Inserts or replaces; when full, the least recently used entry makes room.
    pub fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&at) = self.index.get(&key) {
            if let Some(slot) = self.slots.get_mut(at) {
                slot.value = value;
            }
            self.unlink(at);
            self.link_newest(at);
            return;
        }
        let at = if self.index.len() >= self.capacity {
            // Reuse the oldest entry's slot in place.
            let at = self.oldest;
            self.unlink(at);
            if let Some(slot) = self.slots.get_mut(at) {
                self.index.remove(&slot.key);
                slot.key = key;
                slot.value = value;
            }
            at
        } else if let Some(at) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(at) {
                slot.key = key;
                slot.value = value;
            }
            at
        } else {
            self.slots.push(Slot {
                key,
                value,
                newer: NIL,
                older: NIL,
            });
            self.slots.len() - 1
        };
        self.index.insert(key, at);
        self.link_newest(at);
    }

    fn unlink(&mut self, at: usize) {
        let Some(slot) = self.slots.get(at) else { return };
        let (newer, older) = (slot.newer, slot.older);
        match self.slots.get_mut(newer) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.slots.get_mut(older) {
            Some(o) => o.newer = newer,
            None => self.oldest = newer,
        }
    }

    fn link_newest(&mut self, at: usize) {
        let previous = self.newest;
        if let Some(slot) = self.slots.get_mut(at) {
            slot.newer = NIL;
            slot.older = previous;
        }
        match self.slots.get_mut(previous) {
            Some(p) => p.newer = at,
            None => self.oldest = at,
        }
        self.newest = at;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut m = Lru::new(3);
        for k in 1..=3 {
            m.insert(k, k * 10);
        }
        assert_eq!(m.get(&1), Some(&10), "1 is now the newest");
        m.insert(4, 40);
        assert!(!m.contains(&2), "2 was the least recently used");
        assert!(m.contains(&1) && m.contains(&3) && m.contains(&4));
        m.insert(3, 33);
        assert_eq!(m.len(), 3, "replacing does not grow");
        assert_eq!(m.get(&3), Some(&33));
        m.insert(5, 50);
        assert!(!m.contains(&1));
    }

    #[test]
    fn removed_slots_are_reused_and_the_slab_stays_bounded() {
        let mut m = Lru::new(4);
        for k in 0..999u32 {
            m.insert(k, k);
            if k % 3 == 0 {
                assert!(m.remove(&k));
            }
            assert!(m.len() <= 4);
            assert!(m.slots.len() <= 4, "slab grew to {}", m.slots.len());
        }
        // The survivors are the newest inserts that were not removed.
        assert_eq!(m.len(), 4);
        for k in [998, 997, 995, 994] {
            assert!(m.contains(&k), "{k}");
        }
        assert!(!m.remove(&12345));
    }

    #[test]
    fn single_entry_and_zero_capacity() {
        let mut m = Lru::new(1);
        m.insert(1, 1);
        m.insert(2, 2);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&2), Some(&2));
        assert!(m.remove(&2));
        m.insert(3, 3);
        assert_eq!(m.get(&3), Some(&3));
        let mut none = Lru::new(0);
        none.insert(1, 1);
        assert_eq!(none.len(), 0);
    }
}
