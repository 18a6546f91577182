//! A bounded ring: it keeps the last `capacity` values pushed, oldest first, and drops the
//! oldest to make room. The cluster view's history and its events are rings, so a gateway
//! that runs for months holds as much as one that started ten minutes ago.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Ring<T> {
    values: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    /// A ring of at most `capacity` values (at least one).
    pub fn new(capacity: usize) -> Ring<T> {
        let capacity = capacity.max(1);
        Ring {
            values: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds `value`, dropping the oldest when the ring is full.
    pub fn push(&mut self, value: T) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.values.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_values_in_order() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        for value in 1..=5 {
            ring.push(value);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(ring.iter().next_back(), Some(&5));
        let mut tiny = Ring::new(0);
        tiny.push('a');
        tiny.push('b');
        assert_eq!(tiny.iter().collect::<String>(), "b");
    }
}
