//! JSON Web Key Sets: parsing, signature verification, and the `jwksUri` cache.
//!
//! Inline `jwks` is parsed once at compile time. A `jwksUri` is fetched through a
//! [`JwksFetcher`] the embedder supplies (tower-mesh fetches it through the mesh, as Envoy
//! fetches through a cluster), and cached per URI in a [`JwksCache`] that outlives config
//! reloads:
//!
//! * keys are refreshed every [`JwksCacheConfig::refresh_interval`] (Istio's
//!   `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 minutes). A stale entry keeps serving its keys
//!   while a refresh runs in the background, and keeps them if the refresh fails;
//! * a token whose `kid` is not in the cached set triggers a refetch (a rotated signing key),
//!   at most once per [`JwksCacheConfig::min_refetch_interval`];
//! * while no keys were ever fetched, a request waits for the fetch (bounded by the rule's
//!   `timeout`, default 5 s), and fetches are retried at most once per
//!   [`JwksCacheConfig::retry_interval`]; a token for that issuer then fails with
//!   `Jwks remote fetch is failed`.
//!
//! One fetch per URI is in flight at a time; it runs on its own task, so a cancelled request
//! does not cancel it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_core::future::BoxFuture;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::authn::token::{Jwt, JwtFailure};
use crate::error::BoxError;

/// Fetches a JWKS document (`jwtRules[].jwksUri`). The lead implementation goes through the
/// mesh client; tests use an in-memory one.
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches `uri` and returns the response body. Errors are logged and the issuer's
    /// tokens fail with `Jwks remote fetch is failed` until a fetch succeeds.
    fn fetch(&self, uri: &str) -> BoxFuture<'static, Result<Bytes, BoxError>>;
}

/// A parsed JWKS: the keys usable for verification, with their `kid` and `alg`.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    key: DecodingKey,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.alg)))
            .finish()
    }
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON.
    #[error("Jwks is an invalid JSON: {0}")]
    Json(String),
    /// No `keys` array.
    #[error("Jwks does not have [keys] field or it is not an array")]
    NoKeys,
    /// `keys` holds no public key we can use (each skipped key is listed).
    #[error("Jwks doesn't have any valid public key{}", skipped_text(.0))]
    NoValidKeys(Vec<String>),
}

fn skipped_text(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot be used (unknown `kty`,
    /// bad parameters) are skipped; the set is refused only when none is left.
    pub fn parse(text: &[u8]) -> Result<Jwks, JwksError> {
        let doc: Value =
            serde_json::from_slice(text).map_err(|e| JwksError::Json(e.to_string()))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(JwksError::NoKeys);
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut skipped = Vec::new();
        for (i, raw) in keys.iter().enumerate() {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
            let alg = raw.get("alg").and_then(Value::as_str).map(str::to_owned);
            let parsed = serde_json::from_value::<Jwk>(raw.clone())
                .map_err(|e| e.to_string())
                .and_then(|jwk| DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string()));
            match parsed {
                Ok(key) => out.push(Key { kid, alg, key }),
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if out.is_empty() {
            return Err(JwksError::NoValidKeys(skipped));
        }
        Ok(Jwks { keys: out })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key could match `kid` (a key without `kid` matches any).
    pub(crate) fn may_have_kid(&self, kid: Option<&str>) -> bool {
        let Some(kid) = kid else { return true };
        self.keys
            .iter()
            .any(|k| k.kid.as_deref().is_none_or(|k| k == kid))
    }

    /// `jwt_verify_lib`'s `verifyJwtWithoutTimeChecking`: try every key whose `kid` (when
    /// both have one) and `alg` (when the key has one) match the token; the first that
    /// verifies wins. No candidate key → `KidAlgMismatch`; candidates that all fail →
    /// `VerificationFail`.
    pub(crate) fn verify(&self, jwt: &Jwt) -> Result<(), JwtFailure> {
        let mut matched = false;
        for k in &self.keys {
            if let (Some(want), Some(have)) = (jwt.kid.as_deref(), k.kid.as_deref())
                && want != have
            {
                continue;
            }
            if k.alg.as_deref().is_some_and(|a| a != jwt.alg_name) {
                continue;
            }
            matched = true;
            if !k.key.family().algorithms().contains(&jwt.alg) {
                continue;
            }
            if verify_signature(jwt, &k.key, jwt.alg) {
                return Ok(());
            }
        }
        Err(if matched {
            JwtFailure::VerificationFail
        } else {
            JwtFailure::KidAlgMismatch
        })
    }
}

fn verify_signature(jwt: &Jwt, key: &DecodingKey, alg: Algorithm) -> bool {
    jsonwebtoken::crypto::verify(&jwt.signature_b64, jwt.signing_input.as_bytes(), key, alg)
        .unwrap_or(false)
}

/// Timing of the [`JwksCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksCacheConfig {
    /// How long fetched keys are used before a background refresh: Istio's
    /// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL` default, 20 minutes.
    pub refresh_interval: Duration,
    /// The least time between two refetches caused by an unknown `kid` (protects the
    /// identity provider from tokens with made-up key ids). Default 30 s.
    pub min_refetch_interval: Duration,
    /// The least time between two attempts while a URI has no keys (after a failure).
    /// Default 1 s, Envoy's `failed_refetch_duration`.
    pub retry_interval: Duration,
}

impl Default for JwksCacheConfig {
    fn default() -> Self {
        JwksCacheConfig {
            refresh_interval: Duration::from_secs(20 * 60),
            min_refetch_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// The `jwksUri` key cache, shared by every compiled [`crate::authn::JwtAuthn`] that is given
/// it (clone it into each new snapshot so keys survive config reloads). Cheap to clone.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    fetcher: Arc<dyn JwksFetcher>,
    config: JwksCacheConfig,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uris: Vec<String> = self
            .inner
            .entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("JwksCache")
            .field("config", &self.inner.config)
            .field("uris", &uris)
            .finish()
    }
}

struct Entry {
    state: Mutex<EntryState>,
    /// Bumped after every finished fetch; waiters watch it.
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct EntryState {
    keys: Option<Arc<Jwks>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    in_flight: bool,
}

impl JwksCache {
    /// A cache fetching through `fetcher` with the default timing.
    pub fn new(fetcher: Arc<dyn JwksFetcher>) -> Self {
        Self::with_config(fetcher, JwksCacheConfig::default())
    }

    /// A cache fetching through `fetcher` with `config`.
    pub fn with_config(fetcher: Arc<dyn JwksFetcher>, config: JwksCacheConfig) -> Self {
        JwksCache {
            inner: Arc::new(CacheInner {
                fetcher,
                config,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn entry(&self, uri: &str) -> Arc<Entry> {
        let mut entries = match self.inner.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries
            .entry(uri.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    state: Mutex::new(EntryState::default()),
                    done: watch::channel(0).0,
                })
            })
            .clone()
    }

    /// The keys for `uri`, fetching them when needed (see the [module docs](self)). `kid` is
    /// the token's key id: an unknown one triggers a (rate-limited) refetch. `timeout` bounds
    /// the wait for a fetch. `None` when no keys are available.
    pub(crate) async fn keys(
        &self,
        uri: &str,
        kid: Option<&str>,
        timeout: Duration,
    ) -> Option<Arc<Jwks>> {
        let entry = self.entry(uri);
        let cfg = self.inner.config;
        let now = Instant::now();
        let (mut done, wait) = {
            let mut st = lock(&entry.state);
            let since_attempt = st.last_attempt.map(|t| now.saturating_duration_since(t));
            let stale = st
                .fetched_at
                .is_none_or(|t| now.saturating_duration_since(t) >= cfg.refresh_interval);
            let unknown_kid = st.keys.as_ref().is_some_and(|k| !k.may_have_kid(kid));
            let (fetch, wait) = match &st.keys {
                None => (since_attempt.is_none_or(|d| d >= cfg.retry_interval), true),
                Some(_) if unknown_kid => (
                    since_attempt.is_none_or(|d| d >= cfg.min_refetch_interval),
                    true,
                ),
                Some(_) => (
                    stale && since_attempt.is_none_or(|d| d >= cfg.retry_interval),
                    false,
                ),
            };
            if fetch && !st.in_flight {
                st.in_flight = true;
                st.last_attempt = Some(now);
                self.spawn_fetch(uri, entry.clone(), timeout);
            }
            if !st.in_flight || !wait {
                return st.keys.clone();
            }
            (entry.done.subscribe(), wait)
        };
        if wait {
            // Whatever the outcome (done, timed out), read the state again.
            let _ = tokio::time::timeout(timeout, done.changed()).await;
        }
        lock(&entry.state).keys.clone()
    }

    fn spawn_fetch(&self, uri: &str, entry: Arc<Entry>, timeout: Duration) {
        let fetch = self.inner.fetcher.fetch(uri);
        let uri = uri.to_owned();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, fetch).await {
                Ok(Ok(body)) => Jwks::parse(&body).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            {
                let mut st = lock(&entry.state);
                st.in_flight = false;
                match result {
                    Ok(jwks) => {
                        tracing::debug!(
                            target: "tower_mesh::authn",
                            jwks_uri = %uri,
                            keys = jwks.len(),
                            "fetched JWKS"
                        );
                        st.keys = Some(Arc::new(jwks));
                        st.fetched_at = Some(Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(
                            target: "tower_mesh::authn",
                            jwks_uri = %uri,
                            %error,
                            keeping_old_keys = st.keys.is_some(),
                            "JWKS fetch failed"
                        );
                    }
                }
            }
            entry.done.send_modify(|generation| *generation += 1);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
