//! The in-flight window of append messages to one follower (flow control).
//!
//! Each entry is the last log index carried by one append message. The window bounds how far the
//! leader runs ahead of a follower's acknowledgements while pipelining.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Debug, Clone)]
pub struct Inflights {
    cap: usize,
    /// Strictly increasing.
    buf: VecDeque<Index>,
}

impl Inflights {
    pub fn new(cap: usize) -> Self {
        Inflights {
            cap,
            buf: VecDeque::with_capacity(cap.min(64)),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn full(&self) -> bool {
        self.buf.len() >= self.cap
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn add(&mut self, last: Index) {
        debug_assert!(!self.full());
        debug_assert!(self.buf.back().is_none_or(|&b| b < last));
        self.buf.push_back(last);
    }

    /// The follower acknowledged everything up to `to`.
    pub fn free_le(&mut self, to: Index) {
        while self.buf.front().is_some_and(|&f| f <= to) {
            self.buf.pop_front();
        }
    }

    /// Make room for one probe when the follower answers heartbeats but the window is stuck
    /// (an append in it was lost).
    pub fn free_first_one(&mut self) {
        self.buf.pop_front();
    }

    pub fn reset(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_and_frees() {
        let mut w = Inflights::new(3);
        w.add(5);
        w.add(9);
        w.add(12);
        assert!(w.full());
        w.free_le(9);
        assert_eq!(w.len(), 1);
        assert!(!w.full());
        w.free_first_one();
        assert!(w.is_empty());
    }
}
