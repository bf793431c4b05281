//! The domain model (providers, users, keys, prices, settings) and the TOML import format.
//!
//! Two shapes live here: the *file* shape ([`ConfigFile`]: what operators write, with plain-text
//! keys and `${VAR}` references) and the *runtime* shape ([`Provider`], [`User`], [`ApiKey`],
//! [`Price`]: what the pipeline reads, with keys only as hashes). The server persists the runtime
//! shape; embedders may build it straight from a file.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dialect::Dialect;
pub use crate::limit::spec::Limits;
use crate::limit::spec::{SPEND_LIMIT_KEYS, take_limits};

/// Database or in-memory identifier of a provider, user or key.
pub type Id = i64;

/// Wire format an upstream provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// Anthropic Messages API (`/v1/messages`).
    Claude,
    /// OpenAI Responses API as used by Codex CLI (`/v1/responses`).
    Codex,
    /// OpenAI Chat Completions and compatible vendors (`/v1/chat/completions`).
    OpenaiCompatible,
    /// Google Gemini `generateContent`.
    Gemini,
}

impl ProviderType {
    /// The name used in TOML and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::OpenaiCompatible => "openai-compatible",
            Self::Gemini => "gemini",
        }
    }

    /// Parses the TOML/database name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "claude" => Some(Self::Claude),
            "codex" => Some(Self::Codex),
            "openai-compatible" => Some(Self::OpenaiCompatible),
            "gemini" => Some(Self::Gemini),
            _ => None,
        }
    }

    /// The client dialect this provider serves natively.
    pub fn native_dialect(self) -> Dialect {
        match self {
            Self::Claude => Dialect::Anthropic,
            Self::Codex => Dialect::OpenaiResponses,
            Self::OpenaiCompatible => Dialect::OpenaiChat,
            Self::Gemini => Dialect::Gemini,
        }
    }
}

impl fmt::Display for ProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a [`ModelRedirect`] (and later model allow-lists) compares a model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// Whole name equal.
    Exact,
    /// Name starts with the pattern.
    Prefix,
    /// Name ends with the pattern.
    Suffix,
    /// Name contains the pattern.
    Contains,
    /// Pattern is a regular expression (Rust `regex` syntax) that must match somewhere.
    Regex,
}

/// A compiled model-name comparison: the match kind, the pattern, and the regex when the kind
/// is [`MatchKind::Regex`] (compiled once, so a bad regex fails at load time, not per request).
#[derive(Debug, Clone)]
pub struct ModelMatcher {
    kind: MatchKind,
    pattern: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for ModelMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.pattern == other.pattern
    }
}

impl ModelMatcher {
    /// Compiles a matcher.
    pub fn new(kind: MatchKind, pattern: &str) -> Result<Self, ConfigError> {
        let regex = match kind {
            MatchKind::Regex => Some(
                regex::Regex::new(pattern)
                    .map_err(|e| ConfigError::Invalid(format!("model pattern regex {pattern:?}: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self { kind, pattern: pattern.to_owned(), regex })
    }

    /// The match kind.
    pub fn kind(&self) -> MatchKind {
        self.kind
    }

    /// The pattern text.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        match self.kind {
            MatchKind::Exact => model == self.pattern,
            MatchKind::Prefix => model.starts_with(&self.pattern),
            MatchKind::Suffix => model.ends_with(&self.pattern),
            MatchKind::Contains => model.contains(self.pattern.as_str()),
            MatchKind::Regex => self.regex.as_ref().is_some_and(|re| re.is_match(model)),
        }
    }
}

/// A rule rewriting the requested model before the request goes to a provider.
/// TOML: `{ match = "exact", from = "claude-3-5-sonnet-latest", to = "claude-sonnet-4-5" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelRedirectRepr", into = "ModelRedirectRepr")]
pub struct ModelRedirect {
    matcher: ModelMatcher,
    /// Model name sent upstream instead.
    pub to: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelRedirectRepr {
    #[serde(rename = "match", default = "default_match_kind")]
    match_kind: MatchKind,
    from: String,
    to: String,
}

fn default_match_kind() -> MatchKind {
    MatchKind::Exact
}

impl TryFrom<ModelRedirectRepr> for ModelRedirect {
    type Error = ConfigError;
    fn try_from(r: ModelRedirectRepr) -> Result<Self, ConfigError> {
        Ok(Self { matcher: ModelMatcher::new(r.match_kind, &r.from)?, to: r.to })
    }
}

impl From<ModelRedirect> for ModelRedirectRepr {
    fn from(r: ModelRedirect) -> Self {
        Self { match_kind: r.matcher.kind, from: r.matcher.pattern, to: r.to }
    }
}

impl ModelRedirect {
    /// Builds a rule, compiling the regex once.
    pub fn new(match_kind: MatchKind, from: &str, to: &str) -> Result<Self, ConfigError> {
        Ok(Self { matcher: ModelMatcher::new(match_kind, from)?, to: to.to_owned() })
    }

    /// How `from` is compared.
    pub fn match_kind(&self) -> MatchKind {
        self.matcher.kind
    }

    /// The pattern compared with the requested model.
    pub fn from(&self) -> &str {
        &self.matcher.pattern
    }

    /// Whether the rule applies to `model`.
    pub fn matches(&self, model: &str) -> bool {
        self.matcher.matches(model)
    }
}

/// An entry of an `allowed_models` list: a plain string is an exact name, a table gives the
/// match kind: `{ match = "prefix", pattern = "claude-" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelPatternRepr", into = "ModelPatternRepr")]
pub struct ModelPattern(ModelMatcher);

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum ModelPatternRepr {
    Exact(String),
    Rule {
        #[serde(rename = "match")]
        match_kind: MatchKind,
        pattern: String,
    },
}

impl TryFrom<ModelPatternRepr> for ModelPattern {
    type Error = ConfigError;
    fn try_from(r: ModelPatternRepr) -> Result<Self, ConfigError> {
        match r {
            ModelPatternRepr::Exact(name) => Ok(Self(ModelMatcher::new(MatchKind::Exact, &name)?)),
            ModelPatternRepr::Rule { match_kind, pattern } => {
                Ok(Self(ModelMatcher::new(match_kind, &pattern)?))
            }
        }
    }
}

impl From<ModelPattern> for ModelPatternRepr {
    fn from(p: ModelPattern) -> Self {
        match p.0.kind {
            MatchKind::Exact => Self::Exact(p.0.pattern),
            kind => Self::Rule { match_kind: kind, pattern: p.0.pattern },
        }
    }
}

impl ModelPattern {
    /// Builds a pattern.
    pub fn new(kind: MatchKind, pattern: &str) -> Result<Self, ConfigError> {
        Ok(Self(ModelMatcher::new(kind, pattern)?))
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        self.0.matches(model)
    }

    /// The underlying matcher.
    pub fn matcher(&self) -> &ModelMatcher {
        &self.0
    }
}

/// Whether `model` passes an allow-list; an empty list allows every model.
pub fn model_allowed(list: &[ModelPattern], model: &str) -> bool {
    list.is_empty() || list.iter().any(|p| p.matches(model))
}

/// Applies the first matching redirect; `None` when no rule matches.
pub fn redirect_model<'a>(rules: &'a [ModelRedirect], model: &str) -> Option<&'a str> {
    rules.iter().find(|r| r.matches(model)).map(|r| r.to.as_str())
}

/// An upstream account the gateway forwards to.
#[derive(Clone)]
pub struct Provider {
    /// Stable identifier.
    pub id: Id,
    /// Unique, human-chosen name.
    pub name: String,
    /// Wire format of the upstream.
    pub provider_type: ProviderType,
    /// Host, version root (`.../v1`) or full endpoint of the upstream.
    pub base_url: String,
    /// Secret sent upstream; never logged (see the `Debug` impl).
    pub api_key: String,
    /// Relative share of traffic inside a priority tier.
    pub weight: u32,
    /// Lower is preferred.
    pub priority: i32,
    /// Group tags; a caller sees providers sharing one of its groups.
    pub groups: Vec<String>,
    /// Multiplies the computed cost of every request served by this provider.
    pub cost_multiplier: Decimal,
    /// Model rewrites, first match wins.
    pub model_redirects: Vec<ModelRedirect>,
    /// Disabled providers are never selected.
    pub enabled: bool,
    /// Routing, resilience and transport options.
    pub options: ProviderOptions,
    /// `active_from`/`active_to` parsed.
    pub active_window: Option<ActiveWindow>,
    /// Spend limits: a provider over one is left out of selection.
    pub limits: Limits,
    /// The header carrying `api_key` upstream, built from it once.
    pub(crate) upstream_auth: Option<(http::HeaderName, http::HeaderValue)>,
}

impl Provider {
    /// Whether the provider serves clients of `dialect`, natively or by translation.
    pub fn serves(&self, dialect: Dialect) -> bool {
        self.provider_type.native_dialect() == dialect || self.options.translate_from.contains(&dialect)
    }

    /// The runtime provider of a config entry; validates and compiles what it can.
    pub fn from_config(id: Id, cfg: &ProviderConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            id,
            name: cfg.name.clone(),
            provider_type: cfg.provider_type,
            base_url: cfg.base_url.clone(),
            api_key: cfg.api_key.clone(),
            weight: cfg.weight,
            priority: cfg.priority,
            groups: cfg.groups.clone(),
            cost_multiplier: cfg.cost_multiplier,
            model_redirects: cfg.model_redirects.clone(),
            enabled: cfg.enabled,
            active_window: ActiveWindow::parse(
                cfg.options.active_from.as_deref(),
                cfg.options.active_to.as_deref(),
            )?,
            options: cfg.options.clone(),
            limits: cfg.limits.clone(),
            upstream_auth: crate::forward::headers::provider_auth_header(cfg.provider_type, &cfg.api_key),
        })
    }

    /// The priority for a caller in `groups`: the lowest per-group override among the caller's
    /// groups, else the provider's own priority.
    pub fn effective_priority(&self, groups: &[String]) -> i32 {
        groups
            .iter()
            .filter_map(|g| self.options.group_priorities.get(g))
            .copied()
            .min()
            .unwrap_or(self.priority)
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("type", &self.provider_type)
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("weight", &self.weight)
            .field("priority", &self.priority)
            .field("groups", &self.groups)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// A person or service that owns API keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier.
    pub id: Id,
    /// Unique name.
    pub name: String,
    /// Provider groups this user may use (`*` = all).
    pub groups: Vec<String>,
    /// Disabled users are rejected with 401.
    pub enabled: bool,
    /// After this instant the user is rejected with 401.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Models this user may request (empty = all).
    #[serde(default)]
    pub allowed_models: Vec<ModelPattern>,
    /// Rate and spend limits; all keys of the user add up to them.
    #[serde(default)]
    pub limits: Limits,
}

/// An API key of the gateway. Only its SHA-256 is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    /// Stable identifier.
    pub id: Id,
    /// Owner.
    pub user_id: Id,
    /// Name, unique per user.
    pub name: String,
    /// Lowercase hex SHA-256 of the plain key ([`hash_api_key`]).
    pub key_hash: String,
    /// Disabled keys are rejected with 401.
    pub enabled: bool,
    /// After this instant the key is rejected with 401.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Provider groups of this key; overrides the user's when set.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Models this key may request (empty = all); applies on top of the user's list.
    #[serde(default)]
    pub allowed_models: Vec<ModelPattern>,
    /// Rate and spend limits of this key, on top of its user's.
    #[serde(default)]
    pub limits: Limits,
}

/// Hashes a plain API key for storage and lookup. Keys are long random strings, so a fast hash
/// is enough: there is nothing to brute-force that is cheaper than guessing the key itself.
pub fn hash_api_key(plain: &str) -> String {
    hex::encode(api_key_digest(plain))
}

/// The SHA-256 digest of a plain API key: [`hash_api_key`] before hex encoding, which is how
/// the catalog looks keys up per request.
pub fn api_key_digest(plain: &str) -> [u8; 32] {
    Sha256::digest(plain.as_bytes()).into()
}

/// Per-million-token prices of one model, in USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Model name the price applies to (compared exactly).
    pub model: String,
    /// Uncached input.
    #[serde(with = "rust_decimal::serde::str")]
    pub input_per_mtok: Decimal,
    /// Output (including thinking).
    #[serde(with = "rust_decimal::serde::str")]
    pub output_per_mtok: Decimal,
    /// Cache writes with a 5-minute TTL; default 1.25 × input.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_write_5m_per_mtok: Option<Decimal>,
    /// Cache writes with a 1-hour TTL; default 2 × input.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_write_1h_per_mtok: Option<Decimal>,
    /// Cache reads; default 0.1 × input.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_read_per_mtok: Option<Decimal>,
}

/// Errors of loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML could not be parsed.
    #[error("config is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A `${VAR}` reference names an unset variable.
    #[error("environment variable {0} referenced by the config is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The TOML import format. Key names are a public contract: operators and tooling rely on them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Upstream accounts.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Users with their keys.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Model prices.
    #[serde(default)]
    pub prices: Vec<Price>,
}

/// `[[providers]]` in the TOML import: the basic fields plus, flat in the same table, the
/// [`ProviderOptions`]. Unknown keys are an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct ProviderConfig {
    /// Unique name; the import upserts by it.
    pub name: String,
    /// `claude`, `codex`, `openai-compatible` or `gemini`.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Upstream base URL.
    pub base_url: String,
    /// Upstream secret (`${VAR}` is expanded).
    pub api_key: String,
    /// Default 1.
    pub weight: u32,
    /// Default 0; lower is preferred.
    pub priority: i32,
    /// Default `["default"]`.
    pub groups: Vec<String>,
    /// Default `"1.0"`.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost_multiplier: Decimal,
    /// Default none.
    pub model_redirects: Vec<ModelRedirect>,
    /// Default true.
    pub enabled: bool,
    /// Everything else, flat in the same TOML table.
    #[serde(flatten)]
    pub options: ProviderOptions,
    /// Spend limits, flat in the same table.
    #[serde(flatten)]
    pub limits: Limits,
}

/// The basic provider fields, deserialized apart from the options (serde cannot combine
/// `flatten` with `deny_unknown_fields`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBase {
    name: String,
    #[serde(rename = "type")]
    provider_type: ProviderType,
    base_url: String,
    api_key: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "default_multiplier", with = "rust_decimal::serde::str")]
    cost_multiplier: Decimal,
    #[serde(default)]
    model_redirects: Vec<ModelRedirect>,
    #[serde(default = "default_true")]
    enabled: bool,
}

const PROVIDER_BASE_KEYS: &[&str] = &[
    "name",
    "type",
    "base_url",
    "api_key",
    "weight",
    "priority",
    "groups",
    "cost_multiplier",
    "model_redirects",
    "enabled",
];

impl TryFrom<serde_json::Map<String, serde_json::Value>> for ProviderConfig {
    type Error = String;
    fn try_from(mut table: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let mut base = serde_json::Map::new();
        for key in PROVIDER_BASE_KEYS {
            if let Some(v) = table.remove(*key) {
                base.insert((*key).to_owned(), v);
            }
        }
        let name = base.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_owned();
        let limits: Limits =
            take_limits(&mut table, &[SPEND_LIMIT_KEYS]).map_err(|e| format!("provider {name:?}: {e}"))?;
        let base: ProviderBase = serde_json::from_value(serde_json::Value::Object(base))
            .map_err(|e| format!("provider {name:?}: {e}"))?;
        // What is left must be options; their deny_unknown_fields reports typos.
        let options: ProviderOptions = serde_json::from_value(serde_json::Value::Object(table))
            .map_err(|e| format!("provider {name:?}: {e}"))?;
        let mut groups = base.groups;
        normalize_groups(&mut groups);
        Ok(Self {
            name: base.name,
            provider_type: base.provider_type,
            base_url: base.base_url,
            api_key: base.api_key,
            weight: base.weight,
            priority: base.priority,
            groups,
            cost_multiplier: base.cost_multiplier,
            model_redirects: base.model_redirects,
            enabled: base.enabled,
            options,
            limits,
        })
    }
}

/// Routing, resilience and transport options of a provider. Every field has a default; time
/// values are milliseconds and `0` turns a timeout or limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderOptions {
    /// Models this provider serves (empty = all), compared with the requested model.
    pub allowed_models: Vec<ModelPattern>,
    /// Priority per caller group, overriding `priority` for callers in that group.
    pub group_priorities: std::collections::BTreeMap<String, i32>,
    /// Start of the daily active window, `HH:MM` in the gateway's timezone.
    pub active_from: Option<String>,
    /// End of the daily active window (exclusive); may be earlier than `active_from` to cross
    /// midnight.
    pub active_to: Option<String>,
    /// Tries on this provider before switching, counting the first. Default 2.
    pub max_retry_attempts: u32,
    /// Consecutive failures that open the circuit; 0 disables the breaker. Default 5.
    pub circuit_breaker_failure_threshold: u32,
    /// How long the circuit stays open. Default 30 minutes.
    pub circuit_breaker_open_duration_ms: u64,
    /// Successes in half-open state that close the circuit. Default 2.
    pub circuit_breaker_half_open_success_threshold: u32,
    /// Outbound proxy: `http://`, `https://`, `socks5://` or `socks5h://`, with optional
    /// `user:password@`.
    pub proxy_url: Option<String>,
    /// When the proxy cannot be reached, connect directly instead of failing.
    pub proxy_fallback_to_direct: bool,
    /// Extra request headers; they cannot replace auth, host or transport headers.
    pub custom_headers: std::collections::BTreeMap<String, String>,
    /// Forward the client's IP headers (`x-forwarded-for`, ...) instead of stripping them.
    pub preserve_client_ip: bool,
    /// Never bind sessions to this provider.
    pub disable_session_reuse: bool,
    /// Distinct sessions active on this provider at once (within the session TTL); 0 = no limit.
    pub limit_concurrent_sessions: u32,
    /// TCP + TLS connect timeout. Default 30 s.
    pub connect_timeout_ms: u64,
    /// Streams: time allowed until the first body byte. Default off.
    pub first_byte_timeout_ms: u64,
    /// Streams: longest gap between two chunks. Default off.
    pub stream_idle_timeout_ms: u64,
    /// Non-streaming requests: total time allowed. Default off.
    pub request_timeout_ms: u64,
    /// Client dialects this provider also serves by translation (its own is always served):
    /// `anthropic`, `openai-chat`, `openai-responses`, `gemini`.
    pub translate_from: Vec<Dialect>,
    /// `codex` providers that accept only Codex CLI's own instructions: `inject` puts
    /// `codex_instructions_text` into `instructions` for requests not from Codex CLI (the
    /// client's own instructions move into a developer message); `keep` (default) sends
    /// requests as they are.
    pub codex_instructions: CodexInstructions,
    /// The instructions text injected by `codex_instructions = "inject"`.
    pub codex_instructions_text: Option<String>,
}

/// What to do with the `instructions` of requests to a `codex` provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodexInstructions {
    /// Send the request's own instructions.
    #[default]
    Keep,
    /// Replace them with the configured text unless the request comes from Codex CLI.
    Inject,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            allowed_models: Vec::new(),
            group_priorities: Default::default(),
            active_from: None,
            active_to: None,
            max_retry_attempts: 2,
            circuit_breaker_failure_threshold: 5,
            circuit_breaker_open_duration_ms: 30 * 60 * 1000,
            circuit_breaker_half_open_success_threshold: 2,
            proxy_url: None,
            proxy_fallback_to_direct: false,
            custom_headers: Default::default(),
            preserve_client_ip: false,
            disable_session_reuse: false,
            limit_concurrent_sessions: 0,
            connect_timeout_ms: 30_000,
            first_byte_timeout_ms: 0,
            stream_idle_timeout_ms: 0,
            request_timeout_ms: 0,
            translate_from: Vec::new(),
            codex_instructions: CodexInstructions::Keep,
            codex_instructions_text: None,
        }
    }
}

/// Headers a provider's `custom_headers` may not set: credentials, routing and framing are the
/// gateway's.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

impl ProviderConfig {
    /// A provider with every optional setting at its default.
    pub fn new(name: &str, provider_type: ProviderType, base_url: &str, api_key: &str) -> Self {
        Self {
            name: name.to_owned(),
            provider_type,
            base_url: base_url.to_owned(),
            api_key: api_key.to_owned(),
            weight: default_weight(),
            priority: 0,
            groups: vec![DEFAULT_GROUP.to_owned()],
            cost_multiplier: default_multiplier(),
            model_redirects: Vec::new(),
            enabled: true,
            options: ProviderOptions::default(),
            limits: Limits::default(),
        }
    }

    /// Checks everything that can be checked without network: URLs, proxy, headers, window.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| ConfigError::Invalid(format!("provider {:?}: {what}", self.name));
        crate::forward::url::validate_base_url(&self.base_url).map_err(|e| bad(format!("base_url: {e}")))?;
        if self.limits.rpm_limit > 0 || self.limits.limit_concurrent_sessions > 0 {
            return Err(bad("providers take spend limits only (rpm_limit is not a provider limit)".into()));
        }
        if self.cost_multiplier.is_sign_negative() {
            return Err(bad("cost_multiplier must not be negative".into()));
        }
        let o = &self.options;
        if let Some(proxy) = &o.proxy_url {
            validate_proxy_url(proxy).map_err(|e| bad(format!("proxy_url: {e}")))?;
        }
        for (name, value) in &o.custom_headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(bad(format!("custom header {name:?} is reserved for the gateway")));
            }
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("custom header name {name:?} is not valid")))?;
            http::HeaderValue::from_str(value)
                .map_err(|_| bad(format!("custom header {name:?} has an invalid value")))?;
        }
        if o.codex_instructions == CodexInstructions::Inject
            && o.codex_instructions_text.as_deref().is_none_or(|t| t.trim().is_empty())
        {
            return Err(bad("codex_instructions = \"inject\" needs codex_instructions_text".into()));
        }
        if o.max_retry_attempts == 0 {
            return Err(bad("max_retry_attempts must be at least 1".into()));
        }
        ActiveWindow::parse(o.active_from.as_deref(), o.active_to.as_deref())
            .map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

/// Checks a proxy URL: scheme, host, and port.
pub fn validate_proxy_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https" | "socks5" | "socks5h") => {}
        _ => return Err("the scheme must be http, https, socks5 or socks5h".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the proxy URL has no host".into());
    }
    // `http::Uri` keeps the port as text; an out-of-range or non-numeric one would only fail
    // when the first request builds its client.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{port:?} is not a valid port"));
    }
    Ok(())
}

/// A daily window in which a provider takes traffic, in minutes after midnight (local to the
/// gateway's timezone). `from > to` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveWindow {
    /// Start, inclusive.
    pub from_minute: u16,
    /// End, exclusive.
    pub to_minute: u16,
}

impl ActiveWindow {
    /// Parses `HH:MM` bounds; both or neither must be given.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Option<Self>, ConfigError> {
        match (from, to) {
            (None, None) => Ok(None),
            (Some(f), Some(t)) => Ok(Some(Self { from_minute: parse_hhmm(f)?, to_minute: parse_hhmm(t)? })),
            _ => Err(ConfigError::Invalid("active_from and active_to must be given together".into())),
        }
    }

    /// Whether `minute` (after local midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.from_minute <= self.to_minute {
            (self.from_minute..self.to_minute).contains(&minute)
        } else {
            minute >= self.from_minute || minute < self.to_minute
        }
    }
}

fn parse_hhmm(text: &str) -> Result<u16, ConfigError> {
    let bad = || ConfigError::Invalid(format!("{text:?} is not a time of day HH:MM"));
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `[[users]]` in the TOML import.
#[derive(Debug, Clone, Deserialize)]
pub struct UserConfig {
    /// Unique name; the import upserts by it.
    pub name: String,
    /// Default `["default"]`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// RFC 3339 instant after which the user is rejected.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Models the user may request; default all.
    #[serde(default)]
    pub allowed_models: Vec<ModelPattern>,
    /// `[[users.keys]]`.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Rate and spend limits, flat in the same table.
    #[serde(flatten)]
    pub limits: Limits,
    /// Keys that are neither fields nor limits: reported by validation (serde cannot deny
    /// unknown fields next to a flattened struct).
    #[serde(flatten, skip_serializing)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// `[[users.keys]]` in the TOML import.
#[derive(Clone, Deserialize)]
pub struct KeyConfig {
    /// Name, unique per user; the import upserts by it.
    pub name: String,
    /// The plain key (`${VAR}` is expanded); stored only as a hash.
    pub key: String,
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// RFC 3339 instant after which the key is rejected.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Provider groups of this key; default: the user's.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Models the key may request, on top of the user's list; default all.
    #[serde(default)]
    pub allowed_models: Vec<ModelPattern>,
    /// Rate and spend limits of this key, flat in the same table.
    #[serde(flatten)]
    pub limits: Limits,
    /// Unknown keys, reported by validation.
    #[serde(flatten, skip_serializing)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("enabled", &self.enabled)
            .finish()
    }
}

fn default_weight() -> u32 {
    1
}
fn default_multiplier() -> Decimal {
    Decimal::ONE
}
fn default_true() -> bool {
    true
}

/// The group every untagged provider and user belongs to.
pub const DEFAULT_GROUP: &str = "default";

fn normalize_groups(groups: &mut Vec<String>) {
    groups.retain(|g| !g.trim().is_empty());
    if groups.is_empty() {
        groups.push(DEFAULT_GROUP.to_owned());
    }
}

impl ConfigFile {
    /// Parses TOML, expands `${VAR}` from the process environment and validates.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_with_env(text, |name| std::env::var(name).ok())
    }

    /// Reads and parses a TOML file.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text)
    }

    /// Like [`ConfigFile::from_toml_str`] with an explicit variable lookup (for tests).
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut file: ConfigFile = toml::from_str(text)?;
        for p in &mut file.providers {
            p.api_key = expand_env(&p.api_key, &env)?;
            p.base_url = expand_env(&p.base_url, &env)?;
            if let Some(proxy) = &p.options.proxy_url {
                p.options.proxy_url = Some(expand_env(proxy, &env)?);
            }
            normalize_groups(&mut p.groups);
        }
        for u in &mut file.users {
            normalize_groups(&mut u.groups);
            for k in &mut u.keys {
                k.key = expand_env(&k.key, &env)?;
                if let Some(groups) = &mut k.groups {
                    normalize_groups(groups);
                }
            }
        }
        file.validate()?;
        Ok(file)
    }

    /// Checks names, keys, limits and prices; [`ConfigFile::from_toml_str`] calls it, and
    /// so does building a catalog from a config value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!("duplicate provider name {:?}", p.name)));
            }
            p.validate()?;
        }
        let mut users = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for u in &self.users {
            if !users.insert(u.name.as_str()) {
                return Err(ConfigError::Invalid(format!("duplicate user name {:?}", u.name)));
            }
            if let Some(field) = u.unknown.keys().next() {
                return Err(ConfigError::Invalid(format!("user {:?}: unknown field `{field}`", u.name)));
            }
            for k in &u.keys {
                if let Some(field) = k.unknown.keys().next() {
                    return Err(ConfigError::Invalid(format!(
                        "key {:?} of user {:?}: unknown field `{field}`",
                        k.name, u.name
                    )));
                }
                if k.key.len() < 8 {
                    return Err(ConfigError::Invalid(format!(
                        "key {:?} of user {:?} is shorter than 8 characters",
                        k.name, u.name
                    )));
                }
                if !keys.insert(k.key.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "key {:?} of user {:?} is used twice",
                        k.name, u.name
                    )));
                }
            }
        }
        for price in &self.prices {
            let all = [
                Some(price.input_per_mtok),
                Some(price.output_per_mtok),
                price.cache_write_5m_per_mtok,
                price.cache_write_1h_per_mtok,
                price.cache_read_per_mtok,
            ];
            if all.into_iter().flatten().any(|d| d.is_sign_negative()) {
                return Err(ConfigError::Invalid(format!("price of {:?} is negative", price.model)));
            }
        }
        Ok(())
    }
}

/// Expands `${NAME}` references; `$$` is not special, and a lone `$` stays as is.
pub fn expand_env(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::Invalid(format!("unterminated ${{ in {value:?}")));
        };
        let name = &after[..end];
        let resolved = env(name).ok_or_else(|| ConfigError::MissingEnv(name.to_owned()))?;
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[[providers]]
name = "anthropic-main"
type = "claude"
base_url = "https://api.anthropic.com"
api_key = "${ANTHROPIC_API_KEY}"
weight = 1
priority = 0
groups = ["default"]
cost_multiplier = "1.0"
model_redirects = [{ match = "exact", from = "claude-3-5-sonnet-latest", to = "claude-sonnet-4-5" }]

[[users]]
name = "alice"
groups = ["default"]
[[users.keys]]
name = "laptop"
key = "sk-alice-0001"

[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
cache_write_5m_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
cache_read_per_mtok = "0.30"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "ANTHROPIC_API_KEY").then(|| "sk-ant-test".to_owned())
    }

    #[test]
    fn parses_the_documented_example() {
        let cfg = ConfigFile::from_toml_str_with_env(SAMPLE, env).expect("parse");
        assert_eq!(cfg.providers[0].api_key, "sk-ant-test");
        assert_eq!(cfg.providers[0].provider_type, ProviderType::Claude);
        assert_eq!(
            redirect_model(&cfg.providers[0].model_redirects, "claude-3-5-sonnet-latest"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(cfg.users[0].keys[0].key, "sk-alice-0001");
        assert_eq!(cfg.prices[0].cache_read_per_mtok, Some(Decimal::new(30, 2)));
    }

    #[test]
    fn missing_env_var_is_an_error() {
        let err = ConfigFile::from_toml_str_with_env(SAMPLE, |_| None).expect_err("must fail");
        assert!(matches!(err, ConfigError::MissingEnv(ref v) if v == "ANTHROPIC_API_KEY"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = ConfigFile::from_toml_str(
            "[[providers]]\nname='a'\ntype='claude'\nbase_url='http://x'\napi_key='k'\nwieght=2\n",
        )
        .expect_err("typo must fail");
        assert!(err.to_string().contains("wieght"), "{err}");
    }

    #[test]
    fn redirect_match_kinds() {
        let cases = [
            (MatchKind::Exact, "a", "a", true),
            (MatchKind::Exact, "a", "ab", false),
            (MatchKind::Prefix, "claude-", "claude-x", true),
            (MatchKind::Suffix, "-latest", "x-latest", true),
            (MatchKind::Contains, "sonnet", "claude-sonnet-4", true),
            (MatchKind::Regex, "^claude-(3|4)-opus", "claude-4-opus-x", true),
            (MatchKind::Regex, "^claude-(3|4)-opus", "claude-5-opus", false),
        ];
        for (kind, from, model, expect) in cases {
            let rule = ModelRedirect::new(kind, from, "to").expect("rule");
            assert_eq!(rule.matches(model), expect, "{kind:?} {from} {model}");
        }
        assert!(ModelRedirect::new(MatchKind::Regex, "(", "x").is_err());
    }

    #[test]
    fn untagged_providers_join_the_default_group() {
        let cfg = ConfigFile::from_toml_str(
            "[[providers]]\nname='a'\ntype='claude'\nbase_url='http://127.0.0.1:1'\napi_key='k'\n",
        )
        .expect("parse");
        assert_eq!(cfg.providers[0].groups, vec!["default".to_owned()]);
        assert_eq!(cfg.providers[0].weight, 1);
        assert_eq!(cfg.providers[0].cost_multiplier, Decimal::ONE);
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(hash_api_key("abc").len(), 64);
        assert_eq!(hash_api_key("abc"), hash_api_key("abc"));
        assert_ne!(hash_api_key("abc"), hash_api_key("abd"));
    }
}
