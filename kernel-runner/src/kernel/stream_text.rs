//! Turns the raw bytes of a driver's `stdout`/`stderr` frames into text for `stream`
//! messages, without splitting a UTF-8 sequence that arrived in two frames, and caps how much
//! one cell may print.

/// Decodes one output stream incrementally.
#[derive(Debug, Default)]
pub struct StreamText {
    pending: Vec<u8>,
}

impl StreamText {
    /// The text that is complete so far; a trailing partial sequence waits for more bytes.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            // Invalid bytes in the middle: decode everything lossily but keep a trailing
            // incomplete sequence, which may still become valid.
            Err(_) => {
                let tail = incomplete_tail(&self.pending);
                self.pending.len() - tail
            }
        };
        let text = String::from_utf8_lossy(&self.pending[..complete]).into_owned();
        self.pending.drain(..complete);
        text
    }

    /// Whatever is left at the end of a cell, invalid bytes replaced.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// The length of an incomplete UTF-8 sequence at the end of `bytes` (0 to 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 != 0b1000_0000 {
            let needed = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return 0,
            };
            return if needed > back { back } else { 0 };
        }
    }
    0
}

/// Counts what a cell printed against its cap.
#[derive(Debug)]
pub struct OutputBudget {
    cap: usize,
    used: usize,
    exhausted: bool,
}

/// What to do with a piece of output.
#[derive(Debug, PartialEq, Eq)]
pub enum Budgeted {
    /// Send all of it.
    Send,
    /// Send this many bytes of it, then tell the user the rest is dropped.
    Truncate(usize),
    /// Drop it: the cap was reached earlier in this cell.
    Drop,
}

impl OutputBudget {
    pub fn new(cap: usize) -> OutputBudget {
        OutputBudget {
            cap,
            used: 0,
            exhausted: false,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn take(&mut self, len: usize) -> Budgeted {
        if self.exhausted {
            return Budgeted::Drop;
        }
        let left = self.cap - self.used;
        if len <= left {
            self.used += len;
            Budgeted::Send
        } else {
            self.used = self.cap;
            self.exhausted = true;
            Budgeted::Truncate(left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sequences_are_joined() {
        let mut stream = StreamText::default();
        let bytes = "é€😀".as_bytes();
        let mut out = String::new();
        for byte in bytes {
            out.push_str(&stream.push(&[*byte]));
        }
        out.push_str(&stream.finish());
        assert_eq!(out, "é€😀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = StreamText::default();
        let text = stream.push(b"a\xffb\xe2\x82");
        assert_eq!(text, "a\u{fffd}b");
        assert_eq!(stream.push(b"\xac"), "€");
        assert_eq!(stream.push(b"\xe2"), "");
        assert_eq!(stream.finish(), "\u{fffd}");
    }

    #[test]
    fn budget_truncates_once_then_drops() {
        let mut budget = OutputBudget::new(10);
        assert_eq!(budget.take(6), Budgeted::Send);
        assert_eq!(budget.take(6), Budgeted::Truncate(4));
        assert_eq!(budget.take(1), Budgeted::Drop);
    }
}
