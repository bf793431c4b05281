//! Reasoning signatures across dialects.
//!
//! A thinking signature (Anthropic `signature`, Responses `encrypted_content`, Gemini
//! `thoughtSignature`) is only valid for the vendor that made it. When a response is translated,
//! its signatures are tagged with their origin (`gw1:<dialect>:<signature>`); the client sends
//! them back in later turns, and when that request is translated again only signatures of the
//! target's own dialect are restored. Anything else is dropped (with a note) rather than sent to
//! a vendor that would reject the whole request.

use super::Notes;
use super::ir::{Block, Delta, Message, StreamEvent};
use crate::dialect::Dialect;

const TAG: &str = "gw1:";
/// Tag of redacted reasoning: dialects without a redacted kind carry it as a signature, and it
/// must come back as redacted reasoning, not as a thinking block signed with the data.
const REDACTED_TAG: &str = "gw1r:";

/// `signature` marked as made by `origin`.
pub fn tag(origin: Dialect, signature: &str) -> String {
    format!("{TAG}{}:{signature}", origin.as_str())
}

/// The original signature if `signature` was tagged by `target`'s dialect.
pub fn untag(target: Dialect, signature: &str) -> Option<&str> {
    let rest = signature.strip_prefix(TAG)?;
    let (origin, original) = rest.split_once(':')?;
    (Dialect::parse(origin) == Some(target)).then_some(original)
}

/// The original data if `signature` is redacted reasoning tagged by `target`'s dialect.
fn untag_redacted(target: Dialect, signature: &str) -> Option<&str> {
    let rest = signature.strip_prefix(REDACTED_TAG)?;
    let (origin, original) = rest.split_once(':')?;
    (Dialect::parse(origin) == Some(target)).then_some(original)
}

/// Prepares a translated request's conversation for `target`: signatures it made are restored,
/// all others are removed.
pub fn restore_for(target: Dialect, messages: &mut [Message], notes: &mut Notes) {
    for message in messages {
        // Redacted reasoning that travelled as a signature becomes redacted reasoning again.
        for block in message.content.iter_mut() {
            if let Block::Thinking { signature: Some(sig), .. } = block
                && sig.starts_with(REDACTED_TAG)
            {
                *block = Block::RedactedThinking { data: std::mem::take(sig) };
            }
        }
        message.content.retain_mut(|block| match block {
            Block::Thinking { signature, .. } => {
                if let Some(sig) = signature.take() {
                    match untag(target, &sig) {
                        Some(original) => *signature = Some(original.to_owned()),
                        None => notes.note("thinking.signature: made by another vendor, not sent"),
                    }
                }
                true
            }
            Block::RedactedThinking { data } => {
                match untag(target, data).or_else(|| untag_redacted(target, data)) {
                    Some(original) => {
                        *data = original.to_owned();
                        true
                    }
                    None => {
                        notes.note("redacted_thinking: made by another vendor, not sent");
                        false
                    }
                }
            }
            _ => true,
        });
    }
}

/// Tags the signatures of a translated response with the dialect that made them.
pub fn tag_blocks(origin: Dialect, blocks: &mut [Block]) {
    for block in blocks {
        match block {
            Block::Thinking { signature: Some(sig), .. } => *sig = tag(origin, sig),
            Block::RedactedThinking { data } => *data = format!("{REDACTED_TAG}{}:{data}", origin.as_str()),
            _ => {}
        }
    }
}

/// Tags signature deltas of a translated stream: the first piece of each block's signature
/// carries the tag, later pieces are appended as they come.
#[derive(Debug)]
pub struct StreamTagger {
    origin: Dialect,
    tagged: Vec<usize>,
}

impl StreamTagger {
    /// For a stream made by `origin`.
    pub fn new(origin: Dialect) -> Self {
        Self { origin, tagged: Vec::new() }
    }

    /// Tags `event` in place if it starts a signature.
    pub fn tag(&mut self, event: &mut StreamEvent) {
        if let StreamEvent::Delta { index, delta: Delta::Signature(sig) } = event
            && !self.tagged.contains(index)
        {
            self.tagged.push(*index);
            *sig = format!("{TAG}{}:{sig}", self.origin.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::Role;

    #[test]
    fn only_the_target_vendors_own_signatures_come_back() {
        let from_responses = tag(Dialect::OpenaiResponses, "enc-abc");
        assert_eq!(untag(Dialect::OpenaiResponses, &from_responses), Some("enc-abc"));
        assert_eq!(untag(Dialect::Gemini, &from_responses), None);
        assert_eq!(untag(Dialect::OpenaiResponses, "raw-anthropic-sig"), None);

        let mut messages = vec![Message {
            role: Role::Assistant,
            content: vec![
                Block::Thinking { text: "a".into(), signature: Some(from_responses) },
                Block::Thinking { text: "b".into(), signature: Some("native-anthropic".into()) },
                Block::RedactedThinking { data: "opaque".into() },
                Block::Text { text: "answer".into() },
            ],
        }];
        let mut notes = Notes::default();
        restore_for(Dialect::OpenaiResponses, &mut messages, &mut notes);
        assert_eq!(
            messages[0].content,
            vec![
                Block::Thinking { text: "a".into(), signature: Some("enc-abc".into()) },
                Block::Thinking { text: "b".into(), signature: None },
                Block::Text { text: "answer".into() },
            ]
        );
        assert_eq!(notes.0.len(), 2);
    }

    #[test]
    fn redacted_reasoning_comes_back_redacted_even_through_a_signature() {
        let mut blocks = vec![Block::RedactedThinking { data: "opaque".into() }];
        tag_blocks(Dialect::Anthropic, &mut blocks);
        let Block::RedactedThinking { data } = &blocks[0] else { panic!("kind changed") };
        // A dialect without redacted reasoning carried it as a signature.
        let mut messages = vec![Message {
            role: Role::Assistant,
            content: vec![Block::Thinking { text: String::new(), signature: Some(data.clone()) }],
        }];
        restore_for(Dialect::Anthropic, &mut messages, &mut Notes::default());
        assert_eq!(messages[0].content, vec![Block::RedactedThinking { data: "opaque".into() }]);
        // Or as redacted reasoning.
        let mut messages = vec![Message {
            role: Role::Assistant,
            content: vec![Block::RedactedThinking { data: data.clone() }],
        }];
        restore_for(Dialect::Anthropic, &mut messages, &mut Notes::default());
        assert_eq!(messages[0].content, vec![Block::RedactedThinking { data: "opaque".into() }]);
    }

    #[test]
    fn stream_signatures_are_tagged_once_per_block() {
        let mut t = StreamTagger::new(Dialect::Anthropic);
        let mut first = StreamEvent::Delta { index: 1, delta: Delta::Signature("ab".into()) };
        let mut second = StreamEvent::Delta { index: 1, delta: Delta::Signature("cd".into()) };
        t.tag(&mut first);
        t.tag(&mut second);
        assert_eq!(
            first,
            StreamEvent::Delta { index: 1, delta: Delta::Signature("gw1:anthropic:ab".into()) }
        );
        assert_eq!(second, StreamEvent::Delta { index: 1, delta: Delta::Signature("cd".into()) });
    }
}
