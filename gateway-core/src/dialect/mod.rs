//! The client-facing API dialects and how a request's dialect is detected.

use serde::{Deserialize, Serialize};

/// An API wire format a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenaiChat,
    /// OpenAI Responses (`/v1/responses`).
    OpenaiResponses,
    /// Google Gemini (`/v1beta/models/{model}:generateContent`).
    Gemini,
}

impl Dialect {
    /// The stable name used in logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenaiChat => "openai-chat",
            Self::OpenaiResponses => "openai-responses",
            Self::Gemini => "gemini",
        }
    }

    /// Parses [`Dialect::as_str`] names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "anthropic" => Some(Self::Anthropic),
            "openai-chat" => Some(Self::OpenaiChat),
            "openai-responses" => Some(Self::OpenaiResponses),
            "gemini" => Some(Self::Gemini),
            _ => None,
        }
    }

    /// Dialect implied by the request path, if the path belongs to one family.
    pub fn from_path(path: &str) -> Option<Self> {
        if path.starts_with("/v1/messages") {
            Some(Self::Anthropic)
        } else if path.starts_with("/v1/chat/completions") {
            Some(Self::OpenaiChat)
        } else if path.starts_with("/v1/responses") {
            Some(Self::OpenaiResponses)
        } else if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && path.contains(':')) {
            Some(Self::Gemini)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_detection() {
        assert_eq!(Dialect::from_path("/v1/messages"), Some(Dialect::Anthropic));
        assert_eq!(Dialect::from_path("/v1/messages/count_tokens"), Some(Dialect::Anthropic));
        assert_eq!(Dialect::from_path("/v1/chat/completions"), Some(Dialect::OpenaiChat));
        assert_eq!(Dialect::from_path("/v1/responses"), Some(Dialect::OpenaiResponses));
        assert_eq!(
            Dialect::from_path("/v1beta/models/gemini-2.5-pro:generateContent"),
            Some(Dialect::Gemini)
        );
        assert_eq!(Dialect::from_path("/v1/models"), None);
        for d in [Dialect::Anthropic, Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini] {
            assert_eq!(Dialect::parse(d.as_str()), Some(d));
        }
    }
}
