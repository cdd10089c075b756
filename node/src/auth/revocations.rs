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
use eq_actors::subjects::Subjects;
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

/// Every revocation in force, by key, with the bucket revision each key was last changed
/// at. Pure: no I/O. Changes are applied by revision, so one that arrives late (the
/// node's own write racing another node's, seen through the watch) never undoes a newer
/// one.
#[derive(Debug, Default, Clone)]
pub struct RevokedSet {
    by_key: HashMap<String, Slot>,
    in_force: usize,
}

#[derive(Debug, Clone)]
struct Slot {
    revision: u64,
    /// `None`: lifted (remembered so that an older put arriving later stays ignored).
    revocation: Option<Revocation>,
}

impl RevokedSet {
    /// Whether a verified caller's token is revoked.
    pub fn refuses(&self, caller: &Principal) -> bool {
        if self.in_force == 0 {
            return false;
        }
        if let Some(token_id) = &caller.token_id {
            let key = Target::Token {
                token_id: token_id.clone(),
            }
            .key();
            if self.get(&key).is_some() {
                return true;
            }
        }
        let key = Target::Subject {
            subject: caller.subject.clone(),
        }
        .key();
        // Second resolution, like `iat`: a token minted in the very second of the
        // revocation is refused too (better one token too many than one too few).
        self.get(&key)
            .is_some_and(|r| caller.issued_at <= r.revoked_at.timestamp().max(0) as u64)
    }

    /// Applies the change stored at `revision` under `key` (`None`: the key was deleted),
    /// unless the key has changed at a later revision already.
    pub fn apply(&mut self, key: &str, revision: u64, revocation: Option<Revocation>) {
        if self.by_key.get(key).is_some_and(|s| s.revision >= revision) {
            return;
        }
        let before = self.get(key).is_some();
        let after = revocation.is_some();
        self.by_key.insert(
            key.to_string(),
            Slot {
                revision,
                revocation,
            },
        );
        match (before, after) {
            (false, true) => self.in_force += 1,
            (true, false) => self.in_force -= 1,
            _ => {}
        }
    }

    pub fn get(&self, key: &str) -> Option<&Revocation> {
        self.by_key.get(key).and_then(|s| s.revocation.as_ref())
    }

    /// All in force, newest first.
    pub fn list(&self) -> Vec<(String, Revocation)> {
        let mut all: Vec<_> = self
            .by_key
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s.revocation.clone()?)))
            .collect();
        all.sort_by(|a, b| b.1.revoked_at.cmp(&a.1.revoked_at).then(a.0.cmp(&b.0)));
        all
    }

    /// How many are in force.
    pub fn len(&self) -> usize {
        self.in_force
    }

    pub fn is_empty(&self) -> bool {
        self.in_force == 0
    }
}

/// The revocations this node enforces, shared by the token check and the API.
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    set: Arc<RwLock<RevokedSet>>,
    bucket: Arc<std::sync::OnceLock<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    kv: kv::Store,
    js: jetstream::Context,
    subjects: Subjects,
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
        let revision = bucket
            .kv
            .put(&key, value.into())
            .await
            .map_err(|e| RevocationError::Store(e.to_string()))?;
        self.apply(&key, revision, Some(revocation));
        Ok(key)
    }

    /// Lifts a revocation everywhere (and here before answering); `None` if there was none
    /// under `key`.
    pub async fn remove(&self, key: &str) -> Result<Option<Revocation>, RevocationError> {
        let Some(existing) = self.get(key) else {
            return Ok(None);
        };
        let bucket = self.bucket.get().ok_or(RevocationError::NotConnected)?;
        // A KV delete is a marker message (the protocol `Store::delete` speaks); published
        // here because its acknowledgement carries the revision, which orders it against
        // changes the watch brings.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        let ack = bucket
            .js
            .publish_with_headers(bucket.subjects.revocation_key(key), headers, "".into())
            .await
            .map_err(|e| RevocationError::Store(e.to_string()))?
            .await
            .map_err(|e| RevocationError::Store(e.to_string()))?;
        self.apply(key, ack.sequence, None);
        Ok(Some(existing))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevokedSet> {
        // A panic while holding the lock cannot leave the map half-updated (one insert
        // and a counter): keep enforcing what is there.
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, key: &str, revision: u64, value: Option<Revocation>) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(revocation) if revocation.target.key() != key => {
                warn!(key, "ignoring a revocation stored under a foreign key")
            }
            value => set.apply(key, revision, value),
        }
        metrics::gauge!("eq_token_revocations").set(set.len() as f64);
    }

    /// Applies one entry of the bucket.
    fn apply_entry(&self, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                self.apply(&entry.key, entry.revision, decode(&entry.key, &entry.value))
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.apply(&entry.key, entry.revision, None)
            }
        }
    }
}

/// How long loading the list may take before the attempt is retried.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (or creates) the bucket, loads every revocation into `revocations`, and returns
/// once they are loaded; a task then follows later changes until `shutdown`.
pub async fn follow(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
    revocations: &Revocations,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bucket =
        crate::cluster::open_bucket(js, subjects.revocations_bucket_config(replicas)).await?;
    // One consumer for the load and what follows: the latest entry of every key, then
    // every change (read from the stream's leader, never from a lagging replica).
    let mut watch = bucket.watch_with_history(">").await?;
    if bucket.status().await?.values() > 0 {
        tokio::time::timeout(LOAD_TIMEOUT, async {
            while let Some(entry) = watch.next().await {
                let entry = entry?;
                revocations.apply_entry(&entry);
                if entry.delta == 0 {
                    return anyhow::Ok(());
                }
            }
            anyhow::bail!("the revocation watch ended while loading")
        })
        .await
        .map_err(|_| anyhow::anyhow!("loading the revocation list timed out"))??;
    }
    let _ = revocations.bucket.set(Bucket {
        kv: bucket.clone(),
        js: js.clone(),
        subjects: subjects.clone(),
    });
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
            Some(Ok(entry)) => revocations.apply_entry(&entry),
            other => {
                if let Some(Err(error)) = other {
                    warn!(%error, "revocation watch failed; resubscribing");
                }
                // Resubscribe with the latest entry of every key: a change missed meanwhile
                // arrives then (revisions keep older ones from undoing newer ones).
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match bucket.watch_with_history(">").await {
                    Ok(w) => watch = w,
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
            expires_at: u64::MAX / 2,
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
        let r = revoked(
            Target::Token {
                token_id: "t-1".into(),
            },
            1_000,
        );
        set.apply(&r.target.key(), 1, Some(r.clone()));
        assert!(set.refuses(&caller("olga", Some("t-1"), 5_000)));
        assert!(!set.refuses(&caller("olga", Some("t-2"), 500)));
        assert!(!set.refuses(&caller("olga", None, 500)));
    }

    #[test]
    fn a_subject_revocation_refuses_tokens_issued_until_then() {
        let mut set = RevokedSet::default();
        let r = revoked(
            Target::Subject {
                subject: "tablet 7/line-a".into(),
            },
            1_000,
        );
        set.apply(&r.target.key(), 1, Some(r.clone()));
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
    fn lifting_removes_it_and_the_list_is_newest_first() {
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
        set.apply(&old.target.key(), 1, Some(old.clone()));
        set.apply(&new.target.key(), 2, Some(new.clone()));
        assert_eq!(
            set.list().into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            vec![new, old.clone()]
        );
        set.apply(&old.target.key(), 3, None);
        assert!(!set.refuses(&caller("a", None, 0)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_change_arriving_late_never_undoes_a_newer_one() {
        let mut set = RevokedSet::default();
        let r = revoked(
            Target::Subject {
                subject: "olga".into(),
            },
            1_000,
        );
        let key = r.target.key();
        // Revision 10 lifted it, 11 revoked it again; the lift is applied last.
        set.apply(&key, 11, Some(r.clone()));
        set.apply(&key, 10, None);
        assert!(set.refuses(&caller("olga", None, 1)));
        // And the other way round: a lift after a put stays lifted when the put comes back.
        set.apply(&key, 12, None);
        set.apply(&key, 11, Some(r));
        assert!(!set.refuses(&caller("olga", None, 1)));
        assert_eq!(set.len(), 0);
    }
}
