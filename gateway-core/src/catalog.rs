//! The read model the hot path consults: an immutable snapshot swapped whole on change.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ApiKey, ConfigError, ConfigFile, Id, Price, Provider, User, hash_api_key};

/// Everything a request needs to know about configuration, indexed for lookups.
#[derive(Debug, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    users: HashMap<Id, Arc<User>>,
    keys_by_hash: HashMap<String, Arc<ApiKey>>,
    prices: HashMap<String, Arc<Price>>,
}

impl Catalog {
    /// Builds a snapshot. Providers keep their given order (selection is by priority and weight).
    pub fn new(providers: Vec<Provider>, users: Vec<User>, keys: Vec<ApiKey>, prices: Vec<Price>) -> Self {
        Self {
            providers: providers.into_iter().map(Arc::new).collect(),
            users: users.into_iter().map(|u| (u.id, Arc::new(u))).collect(),
            keys_by_hash: keys.into_iter().map(|k| (k.key_hash.clone(), Arc::new(k))).collect(),
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

    /// A key by the hash of its plain text.
    pub fn key_by_hash(&self, hash: &str) -> Option<&Arc<ApiKey>> {
        self.keys_by_hash.get(hash)
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
