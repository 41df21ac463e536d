//! A mesh peer's labels and names in a compact form: the directory holds one entry per
//! workload of the mesh (thousands), so each costs what it must. Strings many peers
//! repeat (namespaces, nodes, label keys, and values such as `app` names shared by a
//! deployment's replicas) and identities (one per service account) are interned and
//! shared across updates; a peer's labels are one sorted slice instead of a `BTreeMap`
//! (whose first node alone is ~0.5 KiB), itself shared by the peers with the same labels
//! (a ReplicaSet's pods).

use std::{collections::HashSet, fmt, hash::Hash, sync::Arc};

use ambit_api::{identity::Identity, telemetry::LabelLookup};

/// Sorted label pairs.
type LabelSet = Arc<[(Arc<str>, Arc<str>)]>;

/// Hands out one shared copy of each distinct string, identity and label set. It lives
/// as long as the directory, so that the peers of many small updates share one copy too.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    identities: HashSet<Arc<Identity>>,
    label_sets: HashSet<LabelSet>,
}

impl Interner {
    /// The shared copy of `text`.
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        share(&mut self.strings, text, |text| Arc::from(text))
    }

    /// The shared copy of `identity`.
    pub fn identity(&mut self, identity: &Identity) -> Arc<Identity> {
        share(&mut self.identities, identity, |identity| {
            Arc::new(identity.clone())
        })
    }

    /// The shared copy of `pairs`.
    fn label_set(&mut self, pairs: &[(Arc<str>, Arc<str>)]) -> LabelSet {
        share(&mut self.label_sets, pairs, |pairs| Arc::from(pairs))
    }

    /// Drops what no peer uses any more (call it once the replaced peers are gone).
    pub fn forget_unused(&mut self) {
        // Label sets first: the strings they drop may then be unused too.
        forget_unshared(&mut self.label_sets);
        forget_unshared(&mut self.strings);
        forget_unshared(&mut self.identities);
    }
}

/// The copy of `value` in `set`, put there by `to_shared` if it was missing.
fn share<T: ?Sized + Eq + Hash>(
    set: &mut HashSet<Arc<T>>,
    value: &T,
    to_shared: impl FnOnce(&T) -> Arc<T>,
) -> Arc<T> {
    if let Some(shared) = set.get(value) {
        return Arc::clone(shared);
    }
    let shared = to_shared(value);
    set.insert(Arc::clone(&shared));
    shared
}

/// Drops the copies only `set` still holds.
fn forget_unshared<T: ?Sized + Eq + Hash>(set: &mut HashSet<Arc<T>>) {
    set.retain(|shared| Arc::strong_count(shared) > 1);
    set.shrink_to_fit();
}

/// A workload's labels, sorted by key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels(LabelSet);

impl Labels {
    /// `labels`, keys and values interned by `interner`.
    pub fn new<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
        interner: &mut Interner,
    ) -> Self {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = labels
            .into_iter()
            .map(|(key, value)| (interner.intern(key), interner.intern(value)))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self(interner.label_set(&pairs))
    }

    /// The labels, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (&**key, &**value))
    }
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[at].1)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn labels_are_looked_up_and_their_strings_shared() {
        let mut interner = Interner::default();
        let v1 = BTreeMap::from([
            ("version".to_owned(), "v1".to_owned()),
            ("app".to_owned(), "cart".to_owned()),
        ]);
        let v2 = BTreeMap::from([
            ("app".to_owned(), "cart".to_owned()),
            ("version".to_owned(), "v2".to_owned()),
        ]);
        let (first, second) = (
            Labels::new(&v1, &mut interner),
            Labels::new(&v2, &mut interner),
        );
        assert_eq!(first.label("app"), Some("cart"));
        assert_eq!(first.label("version"), Some("v1"));
        assert_eq!(second.label("version"), Some("v2"));
        assert_eq!(first.label("zone"), None);
        assert!(Arc::ptr_eq(&first.0[0].1, &second.0[0].1), "one `cart`");
        let replica = Labels::new(&v2, &mut interner);
        assert!(
            Arc::ptr_eq(&second.0, &replica.0),
            "one set for equal labels"
        );
        assert_eq!(
            first.iter().collect::<Vec<_>>(),
            [("app", "cart"), ("version", "v1")]
        );
    }

    #[test]
    fn identities_and_label_sets_are_shared_and_unused_copies_forgotten() {
        let mut interner = Interner::default();
        let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let first = interner.identity(&cart);
        let second = interner.identity(&cart);
        assert!(Arc::ptr_eq(&first, &second), "one copy per identity");
        let shop = interner.intern("shop");
        drop(interner.intern("gone"));
        let labels = BTreeMap::from([("app".to_owned(), "gone-too".to_owned())]);
        drop(Labels::new(&labels, &mut interner));
        drop((first, second));
        interner.forget_unused();
        assert_eq!(interner.identities.len(), 0, "no peer holds the identity");
        assert_eq!(interner.label_sets.len(), 0, "no peer holds the labels");
        assert_eq!(
            interner.strings.len(),
            1,
            "`shop` is still held; the labels' strings went with their set"
        );
        assert!(Arc::ptr_eq(&shop, &interner.intern("shop")));
    }
}
