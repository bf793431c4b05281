//! The canonical intermediate representation every dialect decodes into and encodes from.
//!
//! It is closer to Anthropic Messages and the Responses API than to Chat Completions: content is
//! a list of typed blocks, tool calls and results are blocks, reasoning is a block with an
//! optional signature. Usage follows Anthropic's accounting (`input_tokens` excludes cached and
//! cache-written tokens); decoders of dialects that count cached tokens inside the input
//! subtract them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::usage::TokenUsage;

/// A chat/messages request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Model name as the client asked (after redirects).
    pub model: String,
    /// System instructions, in order.
    pub system: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use tools.
    pub tool_choice: Option<ToolChoice>,
    /// Output token limit.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini).
    pub top_k: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the client wants a stream.
    pub stream: bool,
    /// Reasoning / extended thinking settings.
    pub reasoning: Option<Reasoning>,
    /// Whether several tool calls may come in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// Structured output.
    pub response_format: Option<ResponseFormat>,
    /// End-user identifier for abuse tracking (`metadata.user_id`, `user`).
    pub user: Option<String>,
}

impl Request {
    /// Bytes of the strings the request carries (system, texts, reasoning, image data): a
    /// lower bound of its JSON size in any dialect, to size output buffers once.
    pub(crate) fn text_len(&self) -> usize {
        self.system.iter().map(String::len).sum::<usize>()
            + self.messages.iter().map(|m| blocks_text_len(&m.content)).sum::<usize>()
    }
}

fn blocks_text_len(blocks: &[Block]) -> usize {
    blocks
        .iter()
        .map(|b| match b {
            Block::Text { text } | Block::Thinking { text, .. } => text.len(),
            Block::RedactedThinking { data } => data.len(),
            Block::Image { source: ImageSource::Base64 { data, .. } } => data.len(),
            Block::Image { source: ImageSource::Url { url } } => url.len(),
            Block::ToolResult { content, .. } => blocks_text_len(content),
            Block::ToolUse { .. } => 0,
        })
        .sum()
}

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Content blocks in order.
    pub content: Vec<Block>,
}

/// A piece of content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image {
        /// Where its bytes are.
        source: ImageSource,
    },
    /// The model calls a tool.
    ToolUse {
        /// Call id, unique in the conversation.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (a JSON object).
        input: Value,
    },
    /// The result of a tool call.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// Result content (text and images).
        content: Vec<Block>,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Model reasoning: Anthropic thinking (signed), Responses reasoning (summary text and
    /// encrypted content as the signature), chat `reasoning_content`, Gemini thoughts.
    Thinking {
        /// Reasoning text (may be a summary).
        text: String,
        /// Opaque proof that must be sent back unchanged to the same vendor.
        signature: Option<String>,
    },
    /// Reasoning the vendor returns only encrypted.
    RedactedThinking {
        /// Opaque data.
        data: String,
    },
}

/// Image bytes or location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline base64 data.
    Base64 {
        /// MIME type, e.g. `image/png`.
        media_type: String,
        /// Base64 data without a `data:` prefix.
        data: String,
    },
    /// A URL the vendor fetches.
    Url {
        /// The URL.
        url: String,
    },
}

/// A callable tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON schema of its input.
    pub parameters: Value,
}

/// Tool use policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call some tool.
    Required,
    /// The model must not call tools.
    None,
    /// The model must call this tool.
    Tool {
        /// Tool name.
        name: String,
    },
}

/// Reasoning settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasoning {
    /// Effort level (`minimal`, `low`, `medium`, `high`, ...).
    pub effort: Option<String>,
    /// Token budget (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u64>,
    /// Summary mode (Responses `reasoning.summary`).
    pub summary: Option<String>,
    /// Whether thinking is explicitly off.
    pub disabled: bool,
}

/// Structured output request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name (OpenAI requires one).
        name: Option<String>,
        /// The schema.
        schema: Value,
        /// Strict mode.
        strict: Option<bool>,
    },
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Natural end.
    EndTurn,
    /// Output limit reached.
    MaxTokens,
    /// A stop sequence matched.
    StopSequence,
    /// The model called tools.
    ToolUse,
    /// The model refused / content was filtered.
    Refusal,
}

/// Usage in Anthropic's accounting plus reasoning tokens (informational: already inside
/// `output_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens as the gateway bills them.
    pub tokens: TokenUsage,
    /// Reasoning tokens included in the output.
    pub reasoning_tokens: u64,
}

/// A complete (non-streaming) response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Response id.
    pub id: String,
    /// Model that answered.
    pub model: String,
    /// Content blocks.
    pub content: Vec<Block>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// The stop sequence that matched.
    pub stop_sequence: Option<String>,
    /// Tokens used.
    pub usage: Usage,
}

/// The kind of a block that starts in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockStart {
    /// Text follows as text deltas.
    Text,
    /// A tool call; its input follows as JSON deltas.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// Reasoning text follows as thinking deltas.
    Thinking,
}

/// An increment of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Delta {
    /// Text.
    Text(String),
    /// A piece of a tool call's JSON input.
    Json(String),
    /// Reasoning text.
    Thinking(String),
    /// The reasoning block's signature.
    Signature(String),
}

/// A canonical stream event. A well-formed stream is `Start`, then blocks (each `BlockStart`,
/// deltas, `BlockStop`, never interleaved with another open block of a lower index closing
/// later), then `Finish`, then `Stop` — or an `Error` at any point, which ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The response begins.
    Start {
        /// Response id.
        id: String,
        /// Model.
        model: String,
        /// Usage known at the start (input tokens).
        usage: Usage,
    },
    /// A block begins at `index`.
    BlockStart {
        /// Position in the response content.
        index: usize,
        /// What kind.
        block: BlockStart,
    },
    /// A block grows.
    Delta {
        /// Block index.
        index: usize,
        /// The increment.
        delta: Delta,
    },
    /// A block is complete.
    BlockStop {
        /// Block index.
        index: usize,
    },
    /// Generation ended; final usage.
    Finish {
        /// Why.
        stop_reason: StopReason,
        /// Matched stop sequence.
        stop_sequence: Option<String>,
        /// Final usage.
        usage: Usage,
    },
    /// The stream is complete.
    Stop,
    /// The stream failed.
    Error {
        /// Vendor-neutral category (`overloaded`, `rate_limit`, `invalid_request`, `api_error`, ...).
        kind: String,
        /// Message.
        message: String,
    },
}
