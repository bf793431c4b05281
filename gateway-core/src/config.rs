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

/// A rule rewriting the requested model before the request goes to a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRedirect {
    /// How `from` is compared with the requested model.
    #[serde(rename = "match", default = "default_match_kind")]
    pub match_kind: MatchKind,
    /// Pattern compared with the requested model.
    pub from: String,
    /// Model name sent upstream instead.
    pub to: String,
    #[serde(skip)]
    compiled: Option<regex::Regex>,
}

fn default_match_kind() -> MatchKind {
    MatchKind::Exact
}

impl ModelRedirect {
    /// Builds a rule, compiling the regex once; an invalid regex is an error here rather than a
    /// silent non-match at request time.
    pub fn new(match_kind: MatchKind, from: &str, to: &str) -> Result<Self, ConfigError> {
        let mut rule = Self { match_kind, from: from.to_owned(), to: to.to_owned(), compiled: None };
        rule.compile()?;
        Ok(rule)
    }

    /// Compiles the regex of a rule that was deserialized.
    pub fn compile(&mut self) -> Result<(), ConfigError> {
        if self.match_kind == MatchKind::Regex && self.compiled.is_none() {
            let re = regex::Regex::new(&self.from)
                .map_err(|e| ConfigError::Invalid(format!("model redirect regex {:?}: {e}", self.from)))?;
            self.compiled = Some(re);
        }
        Ok(())
    }

    /// Whether the rule applies to `model`.
    pub fn matches(&self, model: &str) -> bool {
        match self.match_kind {
            MatchKind::Exact => model == self.from,
            MatchKind::Prefix => model.starts_with(&self.from),
            MatchKind::Suffix => model.ends_with(&self.from),
            MatchKind::Contains => model.contains(self.from.as_str()),
            MatchKind::Regex => self.compiled.as_ref().is_some_and(|re| re.is_match(model)),
        }
    }
}

/// Applies the first matching redirect; `None` when no rule matches.
pub fn redirect_model<'a>(rules: &'a [ModelRedirect], model: &str) -> Option<&'a str> {
    rules.iter().find(|r| r.matches(model)).map(|r| r.to.as_str())
}

/// An upstream account the gateway forwards to.
#[derive(Clone, Serialize, Deserialize)]
pub struct Provider {
    /// Stable identifier.
    pub id: Id,
    /// Unique, human-chosen name.
    pub name: String,
    /// Wire format of the upstream.
    #[serde(rename = "type")]
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
}

/// Hashes a plain API key for storage and lookup. Keys are long random strings, so a fast hash
/// is enough: there is nothing to brute-force that is cheaper than guessing the key itself.
pub fn hash_api_key(plain: &str) -> String {
    hex::encode(Sha256::digest(plain.as_bytes()))
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

/// `[[providers]]` in the TOML import.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Default 0; lower is preferred.
    #[serde(default)]
    pub priority: i32,
    /// Default `["default"]`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Default `"1.0"`.
    #[serde(default = "default_multiplier", with = "rust_decimal::serde::str")]
    pub cost_multiplier: Decimal,
    /// Default none.
    #[serde(default)]
    pub model_redirects: Vec<ModelRedirect>,
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// `[[users]]` in the TOML import.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// `[[users.keys]]`.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// `[[users.keys]]` in the TOML import.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
            normalize_groups(&mut p.groups);
            for rule in &mut p.model_redirects {
                rule.compile()?;
            }
        }
        for u in &mut file.users {
            normalize_groups(&mut u.groups);
            for k in &mut u.keys {
                k.key = expand_env(&k.key, &env)?;
            }
        }
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!("duplicate provider name {:?}", p.name)));
            }
            crate::forward::url::validate_base_url(&p.base_url)
                .map_err(|e| ConfigError::Invalid(format!("provider {:?}: base_url: {e}", p.name)))?;
            if p.cost_multiplier.is_sign_negative() {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: cost_multiplier must not be negative",
                    p.name
                )));
            }
        }
        let mut users = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for u in &self.users {
            if !users.insert(u.name.as_str()) {
                return Err(ConfigError::Invalid(format!("duplicate user name {:?}", u.name)));
            }
            for k in &u.keys {
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
