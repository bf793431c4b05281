//! Configuration repositories: importing a [`ConfigFile`] and loading the [`Catalog`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use gateway_core::catalog::Catalog;
use gateway_core::config::{
    ApiKey, ConfigFile, Id, KeyConfig, ModelRedirect, Price, Provider, ProviderConfig, ProviderOptions,
    ProviderType, User, UserConfig, hash_api_key,
};
use gateway_core::limit::Limits;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Database, DbError, PoolExt, Result, with_pool};

/// How many rows of one kind an import created, changed or found as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// Rows inserted.
    pub created: u64,
    /// Rows whose values changed.
    pub updated: u64,
    /// Rows already equal to the file; not written at all.
    pub unchanged: u64,
}

impl ImportCounts {
    fn add(&mut self, change: Change) {
        match change {
            Change::Created => self.created += 1,
            Change::Updated => self.updated += 1,
            Change::Unchanged => self.unchanged += 1,
        }
    }
}

impl fmt::Display for ImportCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} created, {} updated, {} unchanged", self.created, self.updated, self.unchanged)
    }
}

/// What [`Database::import_config`] did, per kind of row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// `[[providers]]`, matched by name.
    pub providers: ImportCounts,
    /// `[[users]]`, matched by name.
    pub users: ImportCounts,
    /// `[[users.keys]]`, matched by (user, key name).
    pub keys: ImportCounts,
    /// `[[prices]]`, matched by model.
    pub prices: ImportCounts,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "providers: {}; users: {}; keys: {}; prices: {}",
            self.providers, self.users, self.keys, self.prices
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

/// The stored columns of a provider, as written by an import.
#[derive(PartialEq, sqlx::FromRow)]
struct ProviderValues {
    #[sqlx(rename = "type")]
    provider_type: String,
    base_url: String,
    api_key: String,
    weight: i64,
    priority: i32,
    groups: String,
    cost_multiplier: String,
    model_redirects: String,
    enabled: bool,
    options: String,
}

impl ProviderValues {
    fn from_config(p: &ProviderConfig) -> Result<Self> {
        Ok(Self {
            provider_type: p.provider_type.as_str().to_owned(),
            base_url: p.base_url.clone(),
            api_key: p.api_key.clone(),
            weight: i64::from(p.weight),
            priority: p.priority,
            groups: serde_json::to_string(&p.groups)?,
            cost_multiplier: p.cost_multiplier.to_string(),
            model_redirects: serde_json::to_string(&p.model_redirects)?,
            enabled: p.enabled,
            options: serde_json::to_string(&p.options)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    id: i64,
    name: String,
    #[sqlx(flatten)]
    values: ProviderValues,
}

#[derive(PartialEq, sqlx::FromRow)]
struct UserValues {
    groups: String,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    allowed_models: String,
}

impl UserValues {
    fn from_config(u: &UserConfig) -> Result<Self> {
        Ok(Self {
            groups: serde_json::to_string(&u.groups)?,
            enabled: u.enabled,
            expires_at: u.expires_at.map(storable_instant),
            allowed_models: serde_json::to_string(&u.allowed_models)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    name: String,
    #[sqlx(flatten)]
    values: UserValues,
}

#[derive(PartialEq, sqlx::FromRow)]
struct KeyValues {
    key_hash: String,
    key_prefix: String,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    groups: Option<String>,
    allowed_models: String,
}

impl KeyValues {
    fn from_config(k: &KeyConfig) -> Result<Self> {
        Ok(Self {
            key_hash: hash_api_key(&k.key),
            key_prefix: key_prefix(&k.key),
            enabled: k.enabled,
            expires_at: k.expires_at.map(storable_instant),
            groups: k.groups.as_ref().map(serde_json::to_string).transpose()?,
            allowed_models: serde_json::to_string(&k.allowed_models)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: i64,
    user_id: i64,
    name: String,
    #[sqlx(flatten)]
    values: KeyValues,
}

#[derive(PartialEq, sqlx::FromRow)]
struct PriceValues {
    input_per_mtok: String,
    output_per_mtok: String,
    cache_write_5m_per_mtok: Option<String>,
    cache_write_1h_per_mtok: Option<String>,
    cache_read_per_mtok: Option<String>,
}

impl PriceValues {
    fn from_price(p: &Price) -> Self {
        Self {
            input_per_mtok: p.input_per_mtok.to_string(),
            output_per_mtok: p.output_per_mtok.to_string(),
            cache_write_5m_per_mtok: p.cache_write_5m_per_mtok.map(|d| d.to_string()),
            cache_write_1h_per_mtok: p.cache_write_1h_per_mtok.map(|d| d.to_string()),
            cache_read_per_mtok: p.cache_read_per_mtok.map(|d| d.to_string()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    model: String,
    #[sqlx(flatten)]
    values: PriceValues,
}

/// Characters of a plain key kept for display.
const KEY_PREFIX_CHARS: usize = 6;

/// The display prefix of a plain key: its first characters and an ellipsis.
pub(crate) fn key_prefix(plain: &str) -> String {
    let mut prefix: String = plain.chars().take(KEY_PREFIX_CHARS).collect();
    prefix.push('…');
    prefix
}

/// PostgreSQL keeps microseconds; truncating before storing makes a re-import compare equal.
fn storable_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn parse_decimal(table: &'static str, column: &'static str, text: &str) -> Result<Decimal> {
    Decimal::from_str(text)
        .map_err(|e| DbError::invalid(table, column, format!("not a decimal ({e}): {text:?}")))
}

fn parse_opt_decimal(
    table: &'static str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<Decimal>> {
    text.map(|t| parse_decimal(table, column, t)).transpose()
}

fn parse_groups(table: &'static str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| DbError::invalid(table, "groups", format!("not a JSON string array: {e}")))
}

impl ProviderRow {
    fn into_provider(self) -> Result<Provider> {
        const T: &str = "providers";
        let v = self.values;
        let provider_type = ProviderType::parse(&v.provider_type).ok_or_else(|| {
            DbError::invalid(T, "type", format!("unknown provider type {:?}", v.provider_type))
        })?;
        let weight = u32::try_from(v.weight)
            .map_err(|_| DbError::invalid(T, "weight", format!("out of range: {}", v.weight)))?;
        let model_redirects: Vec<ModelRedirect> = serde_json::from_str(&v.model_redirects)
            .map_err(|e| DbError::invalid(T, "model_redirects", e.to_string()))?;
        let options: ProviderOptions =
            serde_json::from_str(&v.options).map_err(|e| DbError::invalid(T, "options", e.to_string()))?;
        let config = ProviderConfig {
            name: self.name,
            provider_type,
            base_url: v.base_url,
            api_key: v.api_key,
            weight,
            priority: v.priority,
            groups: parse_groups(T, &v.groups)?,
            cost_multiplier: parse_decimal(T, "cost_multiplier", &v.cost_multiplier)?,
            model_redirects,
            enabled: v.enabled,
            options,
            // The database schema has no limit columns yet: providers from it have no limits.
            limits: Limits::default(),
        };
        Provider::from_config(self.id, &config).map_err(|e| DbError::invalid(T, "options", e.to_string()))
    }
}

impl UserRow {
    fn into_user(self) -> Result<User> {
        Ok(User {
            id: self.id,
            name: self.name,
            groups: parse_groups("users", &self.values.groups)?,
            enabled: self.values.enabled,
            expires_at: self.values.expires_at,
            allowed_models: serde_json::from_str(&self.values.allowed_models)
                .map_err(|e| DbError::invalid("users", "allowed_models", e.to_string()))?,
            // No limit columns in the schema yet (see providers).
            limits: Limits::default(),
        })
    }
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey> {
        const T: &str = "api_keys";
        Ok(ApiKey {
            id: self.id,
            user_id: self.user_id,
            name: self.name,
            key_hash: self.values.key_hash,
            enabled: self.values.enabled,
            expires_at: self.values.expires_at,
            groups: self.values.groups.as_deref().map(|g| parse_groups(T, g)).transpose()?,
            allowed_models: serde_json::from_str(&self.values.allowed_models)
                .map_err(|e| DbError::invalid(T, "allowed_models", e.to_string()))?,
            // No limit columns in the schema yet (see providers).
            limits: Limits::default(),
        })
    }
}

impl PriceRow {
    fn into_price(self) -> Result<Price> {
        const T: &str = "model_prices";
        let v = self.values;
        Ok(Price {
            model: self.model,
            input_per_mtok: parse_decimal(T, "input_per_mtok", &v.input_per_mtok)?,
            output_per_mtok: parse_decimal(T, "output_per_mtok", &v.output_per_mtok)?,
            cache_write_5m_per_mtok: parse_opt_decimal(
                T,
                "cache_write_5m_per_mtok",
                v.cache_write_5m_per_mtok.as_deref(),
            )?,
            cache_write_1h_per_mtok: parse_opt_decimal(
                T,
                "cache_write_1h_per_mtok",
                v.cache_write_1h_per_mtok.as_deref(),
            )?,
            cache_read_per_mtok: parse_opt_decimal(
                T,
                "cache_read_per_mtok",
                v.cache_read_per_mtok.as_deref(),
            )?,
        })
    }
}

impl Database {
    /// Imports a configuration file in one transaction: providers and users are upserted by
    /// name, each user's keys by (user, key name), prices by model. Keys are stored only as
    /// [`hash_api_key`] plus a short display prefix. Rows equal to the file are not written
    /// (a re-import of the same file changes nothing); rows not named in the file are left
    /// alone. Ids of existing rows never change.
    pub async fn import_config(&self, file: &ConfigFile) -> Result<ImportSummary> {
        // Everything that can fail without the database is computed before the transaction.
        let providers = file
            .providers
            .iter()
            .map(|p| Ok((p.name.as_str(), ProviderValues::from_config(p)?)))
            .collect::<Result<Vec<_>>>()?;
        let users = file
            .users
            .iter()
            .map(|u| {
                let keys = u
                    .keys
                    .iter()
                    .map(|k| Ok((k.name.as_str(), KeyValues::from_config(k)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((u.name.as_str(), UserValues::from_config(u)?, keys))
            })
            .collect::<Result<Vec<_>>>()?;
        let prices: Vec<_> =
            file.prices.iter().map(|p| (p.model.as_str(), PriceValues::from_price(p))).collect();

        let now = Utc::now();
        let mut summary = ImportSummary::default();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;

            for (name, new) in &providers {
                let existing = sqlx::query_as::<_, ProviderRow>(
                    "SELECT id, name, type, base_url, api_key, weight, priority, groups, \
                     cost_multiplier, model_redirects, enabled, options FROM providers WHERE name = $1",
                )
                .bind(*name)
                .fetch_optional(&mut *tx)
                .await?;
                let change = match existing {
                    Some(row) if row.values == *new => Change::Unchanged,
                    Some(row) => {
                        sqlx::query(
                            "UPDATE providers SET type = $2, base_url = $3, api_key = $4, \
                             weight = $5, priority = $6, groups = $7, cost_multiplier = $8, \
                             model_redirects = $9, enabled = $10, updated_at = $11, options = $12 \
                             WHERE id = $1",
                        )
                        .bind(row.id)
                        .bind(&new.provider_type)
                        .bind(&new.base_url)
                        .bind(&new.api_key)
                        .bind(new.weight)
                        .bind(new.priority)
                        .bind(&new.groups)
                        .bind(&new.cost_multiplier)
                        .bind(&new.model_redirects)
                        .bind(new.enabled)
                        .bind(now)
                        .bind(&new.options)
                        .execute(&mut *tx)
                        .await?;
                        Change::Updated
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO providers (name, type, base_url, api_key, weight, \
                             priority, groups, cost_multiplier, model_redirects, enabled, \
                             created_at, updated_at, options) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)",
                        )
                        .bind(*name)
                        .bind(&new.provider_type)
                        .bind(&new.base_url)
                        .bind(&new.api_key)
                        .bind(new.weight)
                        .bind(new.priority)
                        .bind(&new.groups)
                        .bind(&new.cost_multiplier)
                        .bind(&new.model_redirects)
                        .bind(new.enabled)
                        .bind(now)
                        .bind(&new.options)
                        .execute(&mut *tx)
                        .await?;
                        Change::Created
                    }
                };
                summary.providers.add(change);
            }

            for (name, new, keys) in &users {
                let existing = sqlx::query_as::<_, UserRow>(
                    "SELECT id, name, groups, enabled, expires_at, allowed_models FROM users WHERE name = $1",
                )
                .bind(*name)
                .fetch_optional(&mut *tx)
                .await?;
                let (user_id, change): (i64, Change) = match existing {
                    Some(row) if row.values == *new => (row.id, Change::Unchanged),
                    Some(row) => {
                        sqlx::query(
                            "UPDATE users SET groups = $2, enabled = $3, expires_at = $4, \
                             updated_at = $5, allowed_models = $6 WHERE id = $1",
                        )
                        .bind(row.id)
                        .bind(&new.groups)
                        .bind(new.enabled)
                        .bind(new.expires_at)
                        .bind(now)
                        .bind(&new.allowed_models)
                        .execute(&mut *tx)
                        .await?;
                        (row.id, Change::Updated)
                    }
                    None => {
                        let id = sqlx::query_scalar::<_, i64>(
                            "INSERT INTO users (name, groups, enabled, expires_at, created_at, \
                             updated_at, allowed_models) VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id",
                        )
                        .bind(*name)
                        .bind(&new.groups)
                        .bind(new.enabled)
                        .bind(new.expires_at)
                        .bind(now)
                        .bind(&new.allowed_models)
                        .fetch_one(&mut *tx)
                        .await?;
                        (id, Change::Created)
                    }
                };
                summary.users.add(change);

                for (key_name, new) in keys {
                    let existing = sqlx::query_as::<_, KeyRow>(
                        "SELECT id, user_id, name, key_hash, key_prefix, enabled, expires_at, groups, \
                         allowed_models FROM api_keys WHERE user_id = $1 AND name = $2",
                    )
                    .bind(user_id)
                    .bind(*key_name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let change = match existing {
                        Some(row) if row.values == *new => Change::Unchanged,
                        Some(row) => {
                            sqlx::query(
                                "UPDATE api_keys SET key_hash = $2, key_prefix = $3, \
                                 enabled = $4, expires_at = $5, updated_at = $6, groups = $7, \
                                 allowed_models = $8 WHERE id = $1",
                            )
                            .bind(row.id)
                            .bind(&new.key_hash)
                            .bind(&new.key_prefix)
                            .bind(new.enabled)
                            .bind(new.expires_at)
                            .bind(now)
                            .bind(&new.groups)
                            .bind(&new.allowed_models)
                            .execute(&mut *tx)
                            .await?;
                            Change::Updated
                        }
                        None => {
                            sqlx::query(
                                "INSERT INTO api_keys (user_id, name, key_hash, key_prefix, \
                                 enabled, expires_at, created_at, updated_at, groups, allowed_models) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
                            )
                            .bind(user_id)
                            .bind(*key_name)
                            .bind(&new.key_hash)
                            .bind(&new.key_prefix)
                            .bind(new.enabled)
                            .bind(new.expires_at)
                            .bind(now)
                            .bind(&new.groups)
                            .bind(&new.allowed_models)
                            .execute(&mut *tx)
                            .await?;
                            Change::Created
                        }
                    };
                    summary.keys.add(change);
                }
            }

            for (model, new) in &prices {
                let existing = sqlx::query_as::<_, PriceRow>(
                    "SELECT model, input_per_mtok, output_per_mtok, cache_write_5m_per_mtok, \
                     cache_write_1h_per_mtok, cache_read_per_mtok \
                     FROM model_prices WHERE model = $1",
                )
                .bind(*model)
                .fetch_optional(&mut *tx)
                .await?;
                let change = match existing {
                    Some(row) if row.values == *new => Change::Unchanged,
                    found => {
                        sqlx::query(
                            "INSERT INTO model_prices (model, input_per_mtok, output_per_mtok, \
                             cache_write_5m_per_mtok, cache_write_1h_per_mtok, \
                             cache_read_per_mtok, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) \
                             ON CONFLICT (model) DO UPDATE SET \
                             input_per_mtok = excluded.input_per_mtok, \
                             output_per_mtok = excluded.output_per_mtok, \
                             cache_write_5m_per_mtok = excluded.cache_write_5m_per_mtok, \
                             cache_write_1h_per_mtok = excluded.cache_write_1h_per_mtok, \
                             cache_read_per_mtok = excluded.cache_read_per_mtok, \
                             updated_at = excluded.updated_at",
                        )
                        .bind(*model)
                        .bind(&new.input_per_mtok)
                        .bind(&new.output_per_mtok)
                        .bind(&new.cache_write_5m_per_mtok)
                        .bind(&new.cache_write_1h_per_mtok)
                        .bind(&new.cache_read_per_mtok)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        if found.is_some() { Change::Updated } else { Change::Created }
                    }
                };
                summary.prices.add(change);
            }

            tx.commit().await?;
        });
        Ok(summary)
    }

    /// Loads every provider (ordered by id), user, key and price into a [`Catalog`] snapshot.
    /// JSON columns are parsed and redirect regexes compiled; a malformed row is an error
    /// rather than a silently missing provider.
    pub async fn load_catalog(&self) -> Result<Catalog> {
        let (providers, users, keys, prices) = with_pool!(self, |pool| {
            // One read transaction: a consistent snapshot across the four tables.
            let mut tx = pool.begin().await?;
            let providers = sqlx::query_as::<_, ProviderRow>(
                "SELECT id, name, type, base_url, api_key, weight, priority, groups, \
                 cost_multiplier, model_redirects, enabled, options FROM providers ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let users = sqlx::query_as::<_, UserRow>(
                "SELECT id, name, groups, enabled, expires_at, allowed_models FROM users ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let keys = sqlx::query_as::<_, KeyRow>(
                "SELECT id, user_id, name, key_hash, key_prefix, enabled, expires_at, groups, \
                 allowed_models FROM api_keys ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let prices = sqlx::query_as::<_, PriceRow>(
                "SELECT model, input_per_mtok, output_per_mtok, cache_write_5m_per_mtok, \
                 cache_write_1h_per_mtok, cache_read_per_mtok FROM model_prices ORDER BY model",
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            (providers, users, keys, prices)
        });

        let providers = providers.into_iter().map(ProviderRow::into_provider).collect::<Result<Vec<_>>>()?;
        let users = users.into_iter().map(UserRow::into_user).collect::<Result<Vec<_>>>()?;
        let keys = keys.into_iter().map(KeyRow::into_key).collect::<Result<Vec<_>>>()?;
        let prices = prices.into_iter().map(PriceRow::into_price).collect::<Result<Vec<_>>>()?;
        Ok(Catalog::new(providers, users, keys, prices))
    }

    /// The id of a user by name; for tooling (e.g. `create-key`) and tests.
    pub async fn user_id_by_name(&self, name: &str) -> Result<Option<Id>> {
        let id = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_keeps_six_characters() {
        assert_eq!(key_prefix("sk-alice-0001"), "sk-ali…");
        assert_eq!(key_prefix("ünïcödé-key"), "ünïcöd…");
    }

    #[test]
    fn instants_are_truncated_to_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("valid instant");
        assert_eq!(storable_instant(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
