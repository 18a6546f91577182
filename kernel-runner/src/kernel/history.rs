//! A kernel's input history, answering `history_request` for every language alike: the cells
//! it ran with `store_history`, numbered by execution count, one session per driver start.
//!
//! It is kept by the runner rather than by each driver, as one piece of plumbing written once,
//! and bounded: the oldest entries go first when it holds more than `MAX_ENTRIES` cells or
//! `MAX_BYTES` of inputs and outputs.

use std::collections::{HashSet, VecDeque};

use cellgate_protocol::content::{HistoryAccess, HistoryRequest};
use serde_json::Value;

/// Cells kept at most, across sessions.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes of inputs and outputs kept at most, across sessions.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    session: u64,
    line: u64,
    input: String,
    /// The `text/plain` of the cell's result, when it had one.
    output: Option<String>,
}

impl Entry {
    fn size(&self) -> usize {
        self.input.len() + self.output.as_ref().map_or(0, String::len)
    }

    fn to_value(&self, with_output: bool) -> Value {
        let source = if with_output {
            Value::Array(vec![
                Value::String(self.input.clone()),
                self.output.clone().map_or(Value::Null, Value::String),
            ])
        } else {
            Value::String(self.input.clone())
        };
        Value::Array(vec![self.session.into(), self.line.into(), source])
    }
}

#[derive(Debug)]
pub struct History {
    /// The current session: 1 for the first driver, one more for each restart.
    session: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            session: 1,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl History {
    /// A restart begins a new session; the earlier ones stay searchable.
    pub fn new_session(&mut self) {
        self.session += 1;
    }

    /// Records the input of cell `line` of the current session.
    pub fn record(&mut self, line: u64, input: &str) {
        let entry = Entry {
            session: self.session,
            line,
            input: input.to_owned(),
            output: None,
        };
        self.bytes += entry.size();
        self.entries.push_back(entry);
        self.trim();
    }

    /// Records the result of cell `line` of the current session.
    pub fn record_output(&mut self, line: u64, text: &str) {
        let session = self.session;
        if let Some(entry) = self
            .entries
            .iter_mut()
            .rev()
            .find(|entry| entry.session == session && entry.line == line)
        {
            self.bytes -= entry.size();
            entry.output = Some(text.to_owned());
            self.bytes += entry.size();
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            match self.entries.pop_front() {
                Some(entry) => self.bytes -= entry.size(),
                None => break,
            }
        }
    }

    /// The `history` list of a `history_reply`, oldest first.
    pub fn answer(&self, request: &HistoryRequest) -> Vec<Value> {
        let picked: Vec<&Entry> = match request.hist_access_type {
            HistoryAccess::Tail => {
                let n = request.n.unwrap_or(10);
                let skip = self.entries.len().saturating_sub(n);
                self.entries.iter().skip(skip).collect()
            }
            HistoryAccess::Range => {
                // As IPython numbers them: positive sessions are absolute, 0 is the current
                // one and negative ones count back from it.
                let session = if request.session > 0 {
                    request.session as u64
                } else {
                    self.session.saturating_sub(request.session.unsigned_abs())
                };
                let start = request.start.max(0) as u64;
                let stop = request.stop.map(|stop| stop.max(0) as u64);
                self.entries
                    .iter()
                    .filter(|entry| entry.session == session && entry.line >= start)
                    .filter(|entry| stop.is_none_or(|stop| entry.line < stop))
                    .collect()
            }
            HistoryAccess::Search => {
                let mut matches: Vec<&Entry> = self
                    .entries
                    .iter()
                    .filter(|entry| glob_matches(&request.pattern, &entry.input))
                    .collect();
                if request.unique {
                    let mut seen = HashSet::new();
                    let mut latest_first: Vec<&Entry> = matches
                        .into_iter()
                        .rev()
                        .filter(|entry| seen.insert(entry.input.as_str()))
                        .collect();
                    latest_first.reverse();
                    matches = latest_first;
                }
                if let Some(n) = request.n {
                    let skip = matches.len().saturating_sub(n);
                    matches.drain(..skip);
                }
                matches
            }
        };
        picked
            .into_iter()
            .map(|entry| entry.to_value(request.output))
            .collect()
    }
}

/// Whether `text` matches the glob `pattern` as a whole: `*` any run of characters, `?` any one
/// character, `[...]` one of a set, as SQLite's GLOB that IPython's history search uses.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_matches(&pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == '[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                literal if literal == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether the class opening at `pattern[open]` contains `c`, and where the pattern goes on;
/// `None` when the bracket is never closed (it is then a literal `[`).
fn class_matches(pattern: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negated = pattern.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < pattern.len() {
        if pattern[i] == ']' && !first {
            return Some((found != negated, i + 1));
        }
        if i + 2 < pattern.len() && pattern[i + 1] == '-' && pattern[i + 2] != ']' {
            found |= pattern[i] <= c && c <= pattern[i + 2];
            i += 3;
        } else {
            found |= pattern[i] == c;
            i += 1;
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> HistoryRequest {
        serde_json::from_value(value).unwrap()
    }

    fn history_of(cells: &[&str]) -> History {
        let mut history = History::default();
        for (line, input) in cells.iter().enumerate() {
            history.record(line as u64 + 1, input);
        }
        history
    }

    #[test]
    fn tail_gives_the_last_n_oldest_first() {
        let history = history_of(&["a = 1", "b = 2", "a + b"]);
        let reply = history.answer(&request(json!({"hist_access_type": "tail", "n": 2})));
        assert_eq!(reply, vec![json!([1, 2, "b = 2"]), json!([1, 3, "a + b"])]);
    }

    #[test]
    fn output_comes_with_its_input_when_asked() {
        let mut history = history_of(&["6 * 7", "x = 1"]);
        history.record_output(1, "42");
        let reply = history.answer(&request(
            json!({"hist_access_type": "tail", "n": 5, "output": true}),
        ));
        assert_eq!(
            reply,
            vec![
                json!([1, 1, ["6 * 7", "42"]]),
                json!([1, 2, ["x = 1", null]])
            ]
        );
    }

    #[test]
    fn range_picks_lines_of_one_session_counted_as_ipython_does() {
        let mut history = history_of(&["old1", "old2"]);
        history.new_session();
        history.record(1, "new1");
        history.record(2, "new2");
        let absolute = history.answer(&request(
            json!({"hist_access_type": "range", "session": 1, "start": 2, "stop": 3}),
        ));
        assert_eq!(absolute, vec![json!([1, 2, "old2"])]);
        let current = history.answer(&request(
            json!({"hist_access_type": "range", "session": 0, "start": 1}),
        ));
        assert_eq!(current, vec![json!([2, 1, "new1"]), json!([2, 2, "new2"])]);
        let previous = history.answer(&request(
            json!({"hist_access_type": "range", "session": -1, "start": 1, "stop": 2}),
        ));
        assert_eq!(previous, vec![json!([1, 1, "old1"])]);
    }

    #[test]
    fn search_is_a_glob_with_unique_and_n() {
        let history = history_of(&["print(1)", "x = 2", "print(1)", "print(22)"]);
        let all = history.answer(&request(
            json!({"hist_access_type": "search", "pattern": "print(?*)"}),
        ));
        assert_eq!(all.len(), 3);
        let unique = history.answer(&request(
            json!({"hist_access_type": "search", "pattern": "print(1)", "unique": true}),
        ));
        assert_eq!(unique, vec![json!([1, 3, "print(1)"])]);
        let last = history.answer(&request(
            json!({"hist_access_type": "search", "pattern": "print*", "n": 1}),
        ));
        assert_eq!(last, vec![json!([1, 4, "print(22)"])]);
    }

    #[test]
    fn globs_match_whole_strings() {
        assert!(glob_matches("1?2*", "1+2"));
        assert!(glob_matches("1?2*", "1+2 # sum"));
        assert!(!glob_matches("1?2", "1+2 "));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("[a-c]x", "bx"));
        assert!(!glob_matches("[^a-c]x", "bx"));
        assert!(glob_matches("é?", "éa"));
        assert!(glob_matches("[x", "[x"));
    }

    #[test]
    fn history_stays_bounded() {
        let mut history = History::default();
        for line in 0..(MAX_ENTRIES as u64 + 5) {
            history.record(line, "x");
        }
        assert_eq!(history.entries.len(), MAX_ENTRIES);
        assert_eq!(history.entries.front().unwrap().line, 5);
        let big = "y".repeat(MAX_BYTES / 2 + 1);
        history.record(1, &big);
        history.record(2, &big);
        assert!(history.bytes <= MAX_BYTES);
        assert_eq!(history.entries.back().unwrap().line, 2);
    }
}
