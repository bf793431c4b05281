//! Enforces a well-formed canonical stream whatever the upstream sent: `Start` before anything,
//! every started block stopped (in order), deltas only for open blocks, exactly one terminal
//! (`Stop` after `Finish`, or `Error`), nothing after it. An upstream that ends early gets a
//! well-formed error ending, never a truncated stream.

use super::ir::{StopReason, StreamEvent, Usage};

/// The normalizer's state for one stream.
#[derive(Debug, Default)]
pub struct StreamNormalizer {
    started: bool,
    open: Vec<usize>,
    finished: bool,
    terminated: bool,
    usage: Usage,
}

impl StreamNormalizer {
    fn ensure_start(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: String::new(), model: String::new(), usage: Usage::default() });
        }
    }

    fn close_all(&mut self, out: &mut Vec<StreamEvent>) {
        for index in self.open.drain(..) {
            out.push(StreamEvent::BlockStop { index });
        }
    }

    /// Feeds one upstream event; appends the events to emit.
    pub fn push(&mut self, event: StreamEvent, out: &mut Vec<StreamEvent>) {
        if self.terminated {
            return;
        }
        match event {
            StreamEvent::Start { id, model, usage } => {
                if self.started {
                    return;
                }
                self.started = true;
                self.usage = usage;
                out.push(StreamEvent::Start { id, model, usage });
            }
            StreamEvent::BlockStart { index, block } => {
                self.ensure_start(out);
                if self.finished || self.open.contains(&index) {
                    return;
                }
                self.open.push(index);
                out.push(StreamEvent::BlockStart { index, block });
            }
            StreamEvent::Delta { index, delta } => {
                if self.open.contains(&index) {
                    out.push(StreamEvent::Delta { index, delta });
                }
            }
            StreamEvent::BlockStop { index } => {
                if let Some(pos) = self.open.iter().position(|i| *i == index) {
                    self.open.remove(pos);
                    out.push(StreamEvent::BlockStop { index });
                }
            }
            StreamEvent::Finish { stop_reason, stop_sequence, usage } => {
                self.ensure_start(out);
                self.close_all(out);
                if !self.finished {
                    self.finished = true;
                    self.usage = usage;
                    out.push(StreamEvent::Finish { stop_reason, stop_sequence, usage });
                }
            }
            StreamEvent::Stop => {
                self.ensure_start(out);
                self.close_all(out);
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish {
                        stop_reason: StopReason::EndTurn,
                        stop_sequence: None,
                        usage: self.usage,
                    });
                }
                self.terminated = true;
                out.push(StreamEvent::Stop);
            }
            StreamEvent::Error { kind, message } => {
                self.ensure_start(out);
                self.close_all(out);
                self.terminated = true;
                out.push(StreamEvent::Error { kind, message });
            }
        }
    }

    /// The upstream ended. A stream that never reached its terminal event ends with an error.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.terminated {
            return;
        }
        if self.finished {
            // Usage and stop reason arrived; only the closing marker was missing.
            self.push(StreamEvent::Stop, out);
            return;
        }
        self.push(
            StreamEvent::Error {
                kind: "api_error".into(),
                message: "the upstream ended the stream before it was complete".into(),
            },
            out,
        );
    }

    /// Whether the stream reached its terminal event.
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::{BlockStart, Delta};

    fn run(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        let mut n = StreamNormalizer::default();
        let mut out = Vec::new();
        for e in events {
            n.push(e, &mut out);
        }
        n.finish(&mut out);
        out
    }

    fn start() -> StreamEvent {
        StreamEvent::Start { id: "m".into(), model: "x".into(), usage: Usage::default() }
    }

    #[test]
    fn a_clean_stream_passes_unchanged() {
        let events = vec![
            start(),
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("hi".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage::default(),
            },
            StreamEvent::Stop,
        ];
        assert_eq!(run(events.clone()), events);
    }

    #[test]
    fn missing_start_and_open_blocks_are_repaired() {
        let out = run(vec![
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("a".into()) },
            StreamEvent::Delta { index: 7, delta: Delta::Text("orphan".into()) },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage::default(),
            },
        ]);
        assert!(matches!(out[0], StreamEvent::Start { .. }));
        assert_eq!(out[2], StreamEvent::Delta { index: 0, delta: Delta::Text("a".into()) });
        assert_eq!(out[3], StreamEvent::BlockStop { index: 0 });
        assert!(matches!(out[4], StreamEvent::Finish { .. }));
        assert_eq!(out[5], StreamEvent::Stop);
        assert_eq!(out.len(), 6, "the orphan delta is dropped: {out:?}");
    }

    #[test]
    fn an_early_end_becomes_an_error_ending() {
        let out = run(vec![
            start(),
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("a".into()) },
        ]);
        assert_eq!(out[3], StreamEvent::BlockStop { index: 0 });
        assert!(matches!(out[4], StreamEvent::Error { .. }));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn exactly_one_terminal() {
        let out = run(vec![
            start(),
            StreamEvent::Error { kind: "overloaded".into(), message: "busy".into() },
            StreamEvent::Stop,
            StreamEvent::Error { kind: "x".into(), message: "y".into() },
        ]);
        assert_eq!(out.len(), 2, "{out:?}");
    }
}
