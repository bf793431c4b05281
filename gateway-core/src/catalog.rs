//! The read model the hot path consults: an immutable snapshot swapped whole on change.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::FastMap;
use crate::config::{ApiKey, ConfigError, ConfigFile, Id, Price, Provider, User, hash_api_key};

/// Everything a request needs to know about configuration, indexed for lookups.
#[derive(Debug, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    users: FastMap<Id, Arc<User>>,
    /// By the SHA-256 digest of the plain key (the stored hex hash, decoded).
    keys_by_digest: FastMap<[u8; 32], Arc<ApiKey>>,
    prices: FastMap<String, Arc<Price>>,
}

impl Catalog {
    /// Builds a snapshot. Providers keep their given order (selection is by priority and weight).
    pub fn new(providers: Vec<Provider>, users: Vec<User>, keys: Vec<ApiKey>, prices: Vec<Price>) -> Self {
        Self {
            providers: providers.into_iter().map(Arc::new).collect(),
            users: users.into_iter().map(|u| (u.id, Arc::new(u))).collect(),
            // A stored hash that is not 64 hex digits matches no key, as before.
            keys_by_digest: keys
                .into_iter()
                .filter_map(|k| Some((digest_of_hash(&k.key_hash)?, Arc::new(k))))
                .collect(),
            prices: prices.into_iter().map(|p| (p.model.clone(), Arc::new(p))).collect(),
        }
    }

    /// A snapshot straight from a TOML config, with ids assigned in file order (1-based). For
    /// embedders without a database; the server assigns ids through its database instead.
    pub fn from_config(file: &ConfigFile) -> Result<Self, ConfigError> {
        file.validate()?;
        let mut providers = Vec::with_capacity(file.providers.len());
        for (i, p) in file.providers.iter().enumerate() {
            providers.push(Provider::from_config(i as Id + 1, p)?);
        }
        let mut users = Vec::new();
        let mut keys = Vec::new();
        for (i, u) in file.users.iter().enumerate() {
            let user_id = i as Id + 1;
            users.push(User {
                id: user_id,
                name: u.name.clone(),
                groups: u.groups.clone(),
                enabled: u.enabled,
                expires_at: u.expires_at,
                allowed_models: u.allowed_models.clone(),
                limits: u.limits.clone(),
            });
            for k in &u.keys {
                keys.push(ApiKey {
                    id: keys.len() as Id + 1,
                    user_id,
                    name: k.name.clone(),
                    key_hash: hash_api_key(&k.key),
                    enabled: k.enabled,
                    expires_at: k.expires_at,
                    groups: k.groups.clone(),
                    allowed_models: k.allowed_models.clone(),
                    limits: k.limits.clone(),
                });
            }
        }
        Ok(Self::new(providers, users, keys, file.prices.clone()))
    }

    /// All providers, enabled or not.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// A key by the hash of its plain text ([`hash_api_key`]).
    pub fn key_by_hash(&self, hash: &str) -> Option<&Arc<ApiKey>> {
        self.keys_by_digest.get(&digest_of_hash(hash)?)
    }

    /// A key by the SHA-256 digest of its plain text ([`crate::config::api_key_digest`]).
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<&Arc<ApiKey>> {
        self.keys_by_digest.get(digest)
    }

    /// A user by id.
    pub fn user(&self, id: Id) -> Option<&Arc<User>> {
        self.users.get(&id)
    }

    /// Every price.
    pub fn prices(&self) -> impl Iterator<Item = &Arc<Price>> {
        self.prices.values()
    }

    /// The price of a model, compared exactly.
    pub fn price(&self, model: &str) -> Option<&Arc<Price>> {
        self.prices.get(model)
    }
}

/// The digest a stored key hash encodes: exactly 64 lowercase hex digits, as [`hash_api_key`]
/// writes them.
fn digest_of_hash(hash: &str) -> Option<[u8; 32]> {
    if hash.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hash, &mut digest).ok()?;
    Some(digest)
}

/// Shared, atomically swappable handle to the current [`Catalog`].
#[derive(Debug, Clone)]
pub struct CatalogHandle(Arc<ArcSwap<Catalog>>);

impl CatalogHandle {
    /// Wraps a first snapshot.
    pub fn new(catalog: Catalog) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(catalog)))
    }

    /// The current snapshot; cheap, lock-free.
    pub fn load(&self) -> Arc<Catalog> {
        self.0.load_full()
    }

    /// Replaces the snapshot; requests in flight keep the one they started with.
    pub fn store(&self, catalog: Catalog) {
        self.0.store(Arc::new(catalog));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::api_key_digest;

    fn catalog_with_key(plain: &str) -> Catalog {
        let file: ConfigFile = toml::from_str(&format!(
            "[[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"laptop\"\nkey = \"{plain}\"\n"
        ))
        .expect("config parses");
        Catalog::from_config(&file).expect("config is valid")
    }

    #[test]
    fn a_key_is_found_by_its_hash_and_by_its_digest_and_nothing_else() {
        let catalog = catalog_with_key("sk-alice-0001");
        let by_digest = catalog.key_by_digest(&api_key_digest("sk-alice-0001")).expect("found by digest");
        let by_hash = catalog.key_by_hash(&hash_api_key("sk-alice-0001")).expect("found by hash");
        assert_eq!(by_digest.name, "laptop");
        assert!(Arc::ptr_eq(by_digest, by_hash));
        assert!(catalog.key_by_digest(&api_key_digest("sk-alice-0002")).is_none());
        // Only the exact form `hash_api_key` writes is a stored hash.
        assert!(catalog.key_by_hash(&hash_api_key("sk-alice-0001").to_uppercase()).is_none());
        assert!(catalog.key_by_hash(&hash_api_key("sk-alice-0001")[..63]).is_none());
        assert!(catalog.key_by_hash("").is_none());
    }

    #[test]
    fn a_stored_hash_that_is_not_a_digest_matches_no_key() {
        let mut key = catalog_with_key("sk-alice-0001")
            .key_by_hash(&hash_api_key("sk-alice-0001"))
            .map(|k| (**k).clone())
            .expect("key");
        key.key_hash = "not-a-hash".to_owned();
        let catalog = Catalog::new(Vec::new(), Vec::new(), vec![key], Vec::new());
        assert!(catalog.key_by_hash("not-a-hash").is_none());
        assert!(catalog.key_by_digest(&api_key_digest("sk-alice-0001")).is_none());
    }
}
