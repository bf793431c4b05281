//! Serializable Anthropic wire shapes.
//!
//! Structs rather than `serde_json::json!` so fields come out in the order Anthropic sends them
//! (`type` first in events, `id` first in messages) whatever features `serde_json` is built
//! with: a realistic fake must not hide clients that peek at the start of a payload.

use serde::Serialize;
use serde_json::Value;

use crate::behavior::MockUsage;

/// A complete message (non-stream body, and `message_start` with empty content).
#[derive(Serialize)]
pub(crate) struct Message<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<ContentBlock<'a>>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'static str>,
    pub usage: Usage,
}

/// One content block.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ContentBlock<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: &'a Value },
}

/// `usage` of a message.
#[derive(Serialize)]
pub(crate) struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation: CacheCreation,
    pub output_tokens: u64,
}

impl Usage {
    /// The configured counts, with `output_tokens` as given (1 in `message_start`).
    pub(crate) fn new(usage: &MockUsage, output_tokens: u64) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cache_creation: CacheCreation {
                ephemeral_5m_input_tokens: usage.cache_creation_5m_input_tokens,
                ephemeral_1h_input_tokens: usage.cache_creation_1h_input_tokens,
            },
            output_tokens,
        }
    }
}

/// `usage.cache_creation`: cache writes split by TTL.
#[derive(Serialize)]
pub(crate) struct CacheCreation {
    pub ephemeral_5m_input_tokens: u64,
    pub ephemeral_1h_input_tokens: u64,
}

/// The `data` of one SSE event; the event name equals its `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEvent<'a> {
    MessageStart { message: Message<'a> },
    Ping,
    ContentBlockStart { index: usize, content_block: ContentBlock<'a> },
    ContentBlockDelta { index: usize, delta: Delta<'a> },
    ContentBlockStop { index: usize },
    MessageDelta { delta: MessageDelta, usage: OutputUsage },
    MessageStop,
}

impl StreamEvent<'_> {
    /// The SSE `event:` name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::Ping => "ping",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

/// `delta` of a `content_block_delta` event.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

/// `delta` of the `message_delta` event.
#[derive(Serialize)]
pub(crate) struct MessageDelta {
    pub stop_reason: &'static str,
    pub stop_sequence: Option<&'static str>,
}

/// `usage` of the `message_delta` event.
#[derive(Serialize)]
pub(crate) struct OutputUsage {
    pub output_tokens: u64,
}

/// The Anthropic error envelope.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail<'a>,
    pub request_id: &'a str,
}

/// `error` of the error envelope.
#[derive(Serialize)]
pub(crate) struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: &'a str,
}

/// Shared with the other dialects.
pub(crate) use crate::common::to_json;
