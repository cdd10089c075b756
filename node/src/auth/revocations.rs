//! Revoked tokens. A signed token stays valid until it expires; a lost tablet or a person
//! who left must be shut out before that without rotating the key (which would log out
//! every tablet). An admin revokes either one token (its `jti`) or every token of a subject
//! issued up to now; a new token minted for that subject afterwards works.
//!
//! Revocations live in the JetStream KV bucket `<PREFIX>_REVOKED`. Every gateway loads it
//! before it serves and follows its changes ([`follow`]), so a revocation made on one node
//! holds on all of them within moments; checking a request is two hash lookups in memory
//! ([`RevokedSet::refuses`], pure).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Principal;

/// Longest token id or subject a revocation names (a subject is at most this long too).
pub const MAX_TARGET_LEN: usize = eq_actors::domain::MAX_ACTOR_LEN;

/// What a revocation shuts out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The one token with this `jti`.
    Token { token_id: String },
    /// Every token of this subject issued (`iat`) at or before the revocation's second.
    Subject { subject: String },
}

impl Target {
    /// Its key in the bucket: the kind and the value in URL-safe base64 (a subject may hold
    /// characters a KV key may not).
    pub fn key(&self) -> String {
        let (kind, value) = match self {
            Target::Token { token_id } => ("token", token_id),
            Target::Subject { subject } => ("subject", subject),
        };
        format!(
            "{kind}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value)
        )
    }
}

/// One revocation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(flatten)]
    pub target: Target,
    pub revoked_at: DateTime<Utc>,
    /// The admin who revoked (the subject of their token).
    pub revoked_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every revocation in force, by key. Pure: no I/O.
#[derive(Debug, Default, Clone)]
pub struct RevokedSet {
    by_key: HashMap<String, Revocation>,
}

impl RevokedSet {
    /// Whether a verified caller's token is revoked.
    pub fn refuses(&self, caller: &Principal) -> bool {
        if self.by_key.is_empty() {
            return false;
        }
        if let Some(token_id) = &caller.token_id {
            let key = Target::Token {
                token_id: token_id.clone(),
            }
            .key();
            if self.by_key.contains_key(&key) {
                return true;
            }
        }
        let key = Target::Subject {
            subject: caller.subject.clone(),
        }
        .key();
        // Second resolution, like `iat`: a token minted in the very second of the
        // revocation is refused too (better one token too many than one too few).
        self.by_key
            .get(&key)
            .is_some_and(|r| caller.issued_at <= r.revoked_at.timestamp().max(0) as u64)
    }

    pub fn insert(&mut self, revocation: Revocation) {
        self.by_key.insert(revocation.target.key(), revocation);
    }

    pub fn remove(&mut self, key: &str) -> Option<Revocation> {
        self.by_key.remove(key)
    }

    pub fn get(&self, key: &str) -> Option<&Revocation> {
        self.by_key.get(key)
    }

    /// All of them, newest first.
    pub fn list(&self) -> Vec<(String, Revocation)> {
        let mut all: Vec<_> = self
            .by_key
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        all.sort_by(|a, b| b.1.revoked_at.cmp(&a.1.revoked_at).then(a.0.cmp(&b.0)));
        all
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The revocations this node enforces, shared by the token check and the API.
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    set: Arc<RwLock<RevokedSet>>,
    bucket: Arc<std::sync::OnceLock<kv::Store>>,
}

/// Why a revocation could not be stored or removed.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("the revocation list is not reachable yet")]
    NotConnected,
    #[error("storing the revocation: {0}")]
    Store(String),
}

impl Revocations {
    pub fn refuses(&self, caller: &Principal) -> bool {
        self.read().refuses(caller)
    }

    pub fn list(&self) -> Vec<(String, Revocation)> {
        self.read().list()
    }

    pub fn get(&self, key: &str) -> Option<Revocation> {
        self.read().get(key).cloned()
    }

    /// Stores a revocation for every node, and enforces it here before answering (so the
    /// admin's next request to this node already sees it).
    pub async fn add(&self, revocation: Revocation) -> Result<String, RevocationError> {
        let bucket = self.bucket.get().ok_or(RevocationError::NotConnected)?;
        let key = revocation.target.key();
        let value = serde_json::to_vec(&revocation).expect("a revocation serializes");
        bucket
            .put(&key, value.into())
            .await
            .map_err(|e| RevocationError::Store(e.to_string()))?;
        self.apply(&key, Some(revocation));
        Ok(key)
    }

    /// Lifts a revocation everywhere; `None` if there was none under `key`.
    pub async fn remove(&self, key: &str) -> Result<Option<Revocation>, RevocationError> {
        let Some(existing) = self.get(key) else {
            return Ok(None);
        };
        let bucket = self.bucket.get().ok_or(RevocationError::NotConnected)?;
        bucket
            .delete(key)
            .await
            .map_err(|e| RevocationError::Store(e.to_string()))?;
        self.apply(key, None);
        Ok(Some(existing))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevokedSet> {
        // A panic while holding the lock cannot leave the map half-updated (insert and
        // remove are single calls): keep enforcing what is there.
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, key: &str, value: Option<Revocation>) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(revocation) if revocation.target.key() == key => set.insert(revocation),
            Some(_) => warn!(key, "ignoring a revocation stored under a foreign key"),
            None => {
                set.remove(key);
            }
        }
        metrics::gauge!("eq_token_revocations").set(set.len() as f64);
    }
}

/// The bucket's name for a subject prefix (`eq` → `EQ_REVOKED`).
pub fn bucket_name(prefix: &str) -> String {
    format!("{}_REVOKED", prefix.to_ascii_uppercase())
}

/// Opens (or creates) the bucket, loads every revocation into `revocations`, and returns
/// once they are loaded; a task then follows later changes until `shutdown`.
pub async fn follow(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
    revocations: &Revocations,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = bucket_name(prefix);
    let bucket = match js.get_key_value(&name).await {
        Ok(bucket) => bucket,
        Err(_) => {
            js.create_key_value(kv::Config {
                bucket: name.clone(),
                description: "Equipment Live: revoked API tokens".into(),
                history: 1,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await?
        }
    };
    // Watch first, then load: a change made in between arrives through the watch (applying
    // it twice is harmless), none is missed.
    let watch = bucket.watch_all().await?;
    let mut keys = bucket.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(value) = bucket.get(&key).await? {
            revocations.apply(&key, decode(&key, &value));
        }
    }
    let _ = revocations.bucket.set(bucket.clone());
    tokio::spawn(follow_changes(bucket, watch, revocations.clone(), shutdown));
    Ok(())
}

async fn follow_changes(
    bucket: kv::Store,
    mut watch: kv::Watch,
    revocations: Revocations,
    shutdown: CancellationToken,
) {
    loop {
        let entry = tokio::select! {
            _ = shutdown.cancelled() => return,
            entry = watch.next() => entry,
        };
        match entry {
            Some(Ok(entry)) => match entry.operation {
                kv::Operation::Put => {
                    revocations.apply(&entry.key, decode(&entry.key, &entry.value))
                }
                kv::Operation::Delete | kv::Operation::Purge => revocations.apply(&entry.key, None),
            },
            other => {
                if let Some(Err(error)) = other {
                    warn!(%error, "revocation watch failed; resubscribing");
                }
                // Resubscribe with the current values (a missed delete would otherwise
                // keep refusing a token an admin let in again).
                tokio::time::sleep(Duration::from_secs(1)).await;
                match bucket.watch_with_history(">").await {
                    Ok(w) => {
                        watch = w;
                    }
                    Err(error) => warn!(%error, "cannot watch the revocation list; retrying"),
                }
            }
        }
    }
}

fn decode(key: &str, value: &[u8]) -> Option<Revocation> {
    match serde_json::from_slice(value) {
        Ok(revocation) => Some(revocation),
        Err(error) => {
            warn!(key, %error, "unreadable revocation; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eq_actors::scope::Scope;

    fn caller(subject: &str, token_id: Option<&str>, issued_at: u64) -> Principal {
        Principal {
            subject: subject.into(),
            role: super::super::Role::Operator,
            scope: Scope::everywhere(),
            limit_key: "sig".into(),
            token_id: token_id.map(str::to_string),
            issued_at,
        }
    }

    fn revoked(target: Target, at: i64) -> Revocation {
        Revocation {
            target,
            revoked_at: DateTime::from_timestamp(at, 0).unwrap(),
            revoked_by: "ada".into(),
            reason: None,
        }
    }

    #[test]
    fn a_token_revocation_refuses_that_token_only() {
        let mut set = RevokedSet::default();
        set.insert(revoked(
            Target::Token {
                token_id: "t-1".into(),
            },
            1_000,
        ));
        assert!(set.refuses(&caller("olga", Some("t-1"), 5_000)));
        assert!(!set.refuses(&caller("olga", Some("t-2"), 500)));
        assert!(!set.refuses(&caller("olga", None, 500)));
    }

    #[test]
    fn a_subject_revocation_refuses_tokens_issued_until_then() {
        let mut set = RevokedSet::default();
        set.insert(revoked(
            Target::Subject {
                subject: "tablet 7/line-a".into(),
            },
            1_000,
        ));
        assert!(set.refuses(&caller("tablet 7/line-a", Some("x"), 999)));
        assert!(set.refuses(&caller("tablet 7/line-a", None, 1_000)));
        assert!(!set.refuses(&caller("tablet 7/line-a", None, 1_001)));
        assert!(!set.refuses(&caller("tablet 8", None, 10)));
    }

    #[test]
    fn keys_are_valid_kv_keys_and_distinct_per_kind() {
        let subject = Target::Subject {
            subject: "anna@plant 1/*".into(),
        };
        let token = Target::Token {
            token_id: "anna@plant 1/*".into(),
        };
        assert_ne!(subject.key(), token.key());
        for key in [subject.key(), token.key()] {
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{key}"
            );
        }
    }

    #[test]
    fn removing_lifts_it_and_the_list_is_newest_first() {
        let mut set = RevokedSet::default();
        let old = revoked(
            Target::Subject {
                subject: "a".into(),
            },
            1,
        );
        let new = revoked(
            Target::Token {
                token_id: "b".into(),
            },
            2,
        );
        set.insert(old.clone());
        set.insert(new.clone());
        assert_eq!(
            set.list().into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            vec![new, old.clone()]
        );
        assert_eq!(set.remove(&old.target.key()), Some(old));
        assert!(!set.refuses(&caller("a", None, 0)));
        assert_eq!(set.len(), 1);
    }
}
