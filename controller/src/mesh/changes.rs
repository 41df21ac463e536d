//! What differs between two versions of the model, entry by entry, so the push converts
//! and compares only those.

use std::{cmp::Ordering, collections::BTreeMap, sync::Arc};

use super::{Key, Mesh, PolicyKind, RouteKind};

/// The entries of a model that differ from another's: added, removed or changed, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub workloads: Vec<Key>,
    pub services: Vec<Key>,
    pub routes: Vec<(RouteKind, Key)>,
    pub policies: Vec<(PolicyKind, Key)>,
    pub credentials: Vec<Key>,
    /// Whether any waypoint differs: a service carries its waypoint's addresses and
    /// identity.
    pub waypoints: bool,
}

impl Changes {
    /// What differs from `before` to `after`.
    #[must_use]
    pub fn between(before: &Mesh, after: &Mesh) -> Self {
        Self {
            workloads: differing_keys(&before.workloads, &after.workloads),
            services: differing_keys(&before.services, &after.services),
            routes: differing_keys(&before.routes, &after.routes),
            policies: differing_keys(&before.policies, &after.policies),
            credentials: differing_keys(&before.credentials, &after.credentials),
            waypoints: before.waypoints != after.waypoints,
        }
    }

    /// Whether the two models are the same.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
            && self.services.is_empty()
            && self.routes.is_empty()
            && self.policies.is_empty()
            && self.credentials.is_empty()
            && !self.waypoints
    }
}

/// The keys present in one map only, or with different values, in key order (a shared
/// value is the same without comparing it).
fn differing_keys<K: Ord + Clone, V: PartialEq>(
    before: &BTreeMap<K, Arc<V>>,
    after: &BTreeMap<K, Arc<V>>,
) -> Vec<K> {
    let mut keys = Vec::new();
    let mut before = before.iter().peekable();
    let mut after = after.iter().peekable();
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => return keys,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((old, _)), Some((new, _))) => old.cmp(new),
        };
        match order {
            Ordering::Less => keys.extend(before.next().map(|(key, _)| key.clone())),
            Ordering::Greater => keys.extend(after.next().map(|(key, _)| key.clone())),
            Ordering::Equal => {
                if let (Some((key, old)), Some((_, new))) = (before.next(), after.next())
                    && !Arc::ptr_eq(old, new)
                    && old != new
                {
                    keys.push(key.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_added_removed_and_changed_keys_in_order() {
        let map = |entries: &[(u8, &'static str)]| -> BTreeMap<u8, Arc<&str>> {
            entries.iter().map(|&(k, v)| (k, Arc::new(v))).collect()
        };
        let before = map(&[(1, "a"), (2, "b"), (4, "d"), (6, "f")]);
        let after = map(&[(0, "z"), (2, "b"), (4, "D"), (5, "e")]);
        assert_eq!(differing_keys(&before, &after), [0, 1, 4, 5, 6]);
        assert!(differing_keys(&after, &after).is_empty());
    }
}
