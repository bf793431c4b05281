//! Reading the gateway configuration handed over from JavaScript.

use gateway_core::config::ConfigFile;

/// How the JS wrapper passed the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigKind {
    /// A TOML file path.
    Path,
    /// TOML text.
    Toml,
    /// `JSON.stringify` of an object with the TOML import's keys.
    Json,
}

impl ConfigKind {
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        match name {
            "path" => Ok(Self::Path),
            "toml" => Ok(Self::Toml),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown config kind {other:?} (expected path, toml or json)")),
        }
    }
}

/// Parses and validates a configuration exactly as the server's TOML import does.
pub(crate) fn load(kind: ConfigKind, text: &str) -> Result<ConfigFile, String> {
    let parsed = match kind {
        ConfigKind::Path => ConfigFile::from_path(text),
        ConfigKind::Toml => ConfigFile::from_toml_str(text),
        ConfigKind::Json => ConfigFile::from_toml_str(&json_to_toml(text)?),
    };
    parsed.map_err(|e| e.to_string())
}

/// Rewrites a JSON object as TOML text, so that an object config goes through the one TOML
/// import path (`${VAR}` expansion, defaults, validation, unknown keys rejected) instead of a
/// second, subtly different one. TOML has no null: a `null` member means "not set" and is left
/// out, as an absent key would be.
fn json_to_toml(text: &str) -> Result<String, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("config is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("config must be an object with the keys of the TOML import".to_owned());
    }
    strip_nulls(&mut value);
    toml::to_string(&value).map_err(|e| format!("config cannot be expressed as TOML: {e}"))
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
