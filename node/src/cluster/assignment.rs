//! Shard assignment as a pure function: given the current owners and the live nodes, which
//! node owns each shard next. Moves as few shards as possible: a shard stays with its owner
//! while that owner is live, orphaned shards go to the least-loaded nodes, and then shards
//! move from the most- to the least-loaded node only until they differ by at most one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who owns each shard (`owners[shard]`), with a counter that grows with every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Assignment {
    pub epoch: u64,
    pub owners: Vec<Option<String>>,
}

impl Assignment {
    /// The shards a node owns.
    pub fn shards_of(&self, node: &str) -> Vec<u32> {
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_deref() == Some(node))
            .map(|(s, _)| s as u32)
            .collect()
    }

    pub fn owner_of(&self, shard: u32) -> Option<&str> {
        self.owners.get(shard as usize).and_then(|o| o.as_deref())
    }
}

/// The next assignment of `shard_count` shards over `live` nodes (sorted, deduplicated by
/// the caller or not — both work). Returns the current one unchanged if nothing must move.
pub fn assign(current: &Assignment, live: &[String], shard_count: u32) -> Assignment {
    let mut live: Vec<String> = live.to_vec();
    live.sort();
    live.dedup();
    let n = shard_count as usize;
    let mut owners: Vec<Option<String>> = (0..n)
        .map(|s| {
            current
                .owners
                .get(s)
                .cloned()
                .flatten()
                .filter(|o| live.contains(o))
        })
        .collect();
    if live.is_empty() {
        return next(current, owners);
    }
    let mut load: BTreeMap<String, Vec<usize>> =
        live.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (s, o) in owners.iter().enumerate() {
        if let Some(o) = o {
            load.get_mut(o).expect("owner is live").push(s);
        }
    }
    // Orphans to the least loaded (ties: smallest name, for determinism).
    for (s, owner) in owners.iter_mut().enumerate() {
        if owner.is_none() {
            let least = least_loaded(&load);
            load.get_mut(&least).expect("live").push(s);
            *owner = Some(least);
        }
    }
    // Balance: move one shard at a time from the most to the least loaded.
    loop {
        let most = load
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
            .map(|(k, v)| (k.clone(), v.len()))
            .expect("live is not empty");
        let least = least_loaded(&load);
        if most.1 <= load[&least].len() + 1 {
            break;
        }
        let shard = load
            .get_mut(&most.0)
            .expect("live")
            .pop()
            .expect("not empty");
        load.get_mut(&least).expect("live").push(shard);
        owners[shard] = Some(least);
    }
    next(current, owners)
}

fn least_loaded(load: &BTreeMap<String, Vec<usize>>) -> String {
    load.iter()
        .min_by(|a, b| a.1.len().cmp(&b.1.len()).then(a.0.cmp(b.0)))
        .map(|(k, _)| k.clone())
        .expect("live is not empty")
}

fn next(current: &Assignment, owners: Vec<Option<String>>) -> Assignment {
    if owners == current.owners {
        current.clone()
    } else {
        Assignment {
            epoch: current.epoch + 1,
            owners,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn spread(a: &Assignment, live: &[String]) -> (usize, usize) {
        let counts: Vec<usize> = live.iter().map(|n| a.shards_of(n).len()).collect();
        (*counts.iter().min().unwrap(), *counts.iter().max().unwrap())
    }

    #[test]
    fn first_assignment_is_even() {
        let live = nodes(&["a", "b", "c"]);
        let a = assign(&Assignment::default(), &live, 64);
        assert!(a.owners.iter().all(Option::is_some));
        let (min, max) = spread(&a, &live);
        assert!(max - min <= 1);
        assert_eq!(a.epoch, 1);
    }

    #[test]
    fn a_node_leaving_moves_only_its_shards() {
        let live = nodes(&["a", "b", "c"]);
        let before = assign(&Assignment::default(), &live, 64);
        let after = assign(&before, &nodes(&["a", "b"]), 64);
        for s in 0..64 {
            if before.owner_of(s) != Some("c") {
                assert_eq!(
                    before.owner_of(s),
                    after.owner_of(s),
                    "shard {s} moved needlessly"
                );
            }
        }
        assert!(after.shards_of("c").is_empty());
        let (min, max) = spread(&after, &nodes(&["a", "b"]));
        assert!(max - min <= 1);
    }

    #[test]
    fn a_node_joining_takes_only_what_balance_needs() {
        let before = assign(&Assignment::default(), &nodes(&["a", "b"]), 64);
        let live = nodes(&["a", "b", "c"]);
        let after = assign(&before, &live, 64);
        let moved = (0..64)
            .filter(|&s| before.owner_of(s) != after.owner_of(s))
            .count();
        assert_eq!(moved, after.shards_of("c").len());
        assert!(moved <= 22, "moved {moved}");
        let (min, max) = spread(&after, &live);
        assert!(max - min <= 1);
    }

    #[test]
    fn nothing_changes_when_nothing_must() {
        let live = nodes(&["a", "b", "c"]);
        let a = assign(&Assignment::default(), &live, 64);
        let b = assign(&a, &live, 64);
        assert_eq!(a, b);
    }

    #[test]
    fn no_live_nodes_leaves_shards_unowned() {
        let a = assign(&Assignment::default(), &nodes(&["a"]), 8);
        let b = assign(&a, &[], 8);
        assert!(b.owners.iter().all(Option::is_none));
    }
}
