//! The last good version: what is rejected or unreadable now keeps its previous
//! version, and is reported as kept.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use ambit_api::manifests::ManifestError;

use super::{Key, Mesh, PolicyKind, RouteKind};
use crate::validate::{Diagnostic, ObjectRef, Severity};

/// An Istio object with an error and no accepted version now keeps its previous one.
pub(super) fn rejected(
    diagnostics: &[Diagnostic],
    previous: &Mesh,
    mesh: &mut Mesh,
) -> Vec<String> {
    let rejected: Vec<&ObjectRef> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .filter_map(|d| d.object.as_ref())
        .collect();
    let key_of = |o: &ObjectRef| (o.namespace.clone(), o.name.clone());
    let mut kept = keep_previous(
        rejected
            .iter()
            .filter_map(|o| Some((RouteKind::of(&o.group, &o.kind)?, key_of(o)))),
        &previous.routes,
        &mut mesh.routes,
        |(kind, key)| label(key, kind.as_str()),
    );
    kept.extend(keep_previous(
        rejected
            .iter()
            .filter_map(|o| Some((PolicyKind::of(&o.kind)?, key_of(o)))),
        &previous.policies,
        &mut mesh.policies,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept
}

/// Every object of a file that cannot be read (entirely or from a bad document on)
/// keeps its previous version, unless the readable part still defines it.
pub(super) fn unreadable_files(
    errors: &[ManifestError],
    previous: &Mesh,
    mesh: &mut Mesh,
) -> Vec<String> {
    let broken: BTreeSet<&PathBuf> = errors
        .iter()
        .filter_map(|error| match error {
            ManifestError::File { path, .. } => Some(path),
            ManifestError::Document { at, .. } => Some(&at.file),
            ManifestError::Folder { .. } => None,
        })
        .collect();
    let from_broken = |source: &PathBuf| broken.contains(source);
    let mut kept = keep_previous(
        keys_where(&previous.workloads, |w| from_broken(&w.source)),
        &previous.workloads,
        &mut mesh.workloads,
        |key| label(key, "Pod"),
    );
    kept.extend(keep_previous(
        keys_where(&previous.services, |s| from_broken(&s.source)),
        &previous.services,
        &mut mesh.services,
        |key| label(key, "Service"),
    ));
    kept.extend(keep_previous(
        keys_where(&previous.credentials, |c| from_broken(&c.source)),
        &previous.credentials,
        &mut mesh.credentials,
        |key| label(key, "Secret"),
    ));
    kept.extend(keep_previous(
        keys_where(&previous.routes, |r| from_broken(&r.source)),
        &previous.routes,
        &mut mesh.routes,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept.extend(keep_previous(
        keys_where(&previous.policies, |p| from_broken(&p.source)),
        &previous.policies,
        &mut mesh.policies,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept
}

fn keys_where<K: Clone, V>(map: &BTreeMap<K, V>, keep: impl Fn(&V) -> bool) -> Vec<K> {
    map.iter()
        .filter(|(_, value)| keep(value))
        .map(|(key, _)| key.clone())
        .collect()
}

/// Copies from `previous` into `current` each of `keys` that `current` lacks; returns
/// their labels.
fn keep_previous<K: Ord + Clone, V: Clone>(
    keys: impl IntoIterator<Item = K>,
    previous: &BTreeMap<K, V>,
    current: &mut BTreeMap<K, V>,
    describe: impl Fn(&K) -> String,
) -> Vec<String> {
    let mut kept = Vec::new();
    for key in keys {
        if current.contains_key(&key) {
            continue;
        }
        if let Some(value) = previous.get(&key) {
            kept.push(describe(&key));
            current.insert(key, value.clone());
        }
    }
    kept
}

/// `namespace/name (Kind)`.
fn label(key: &Key, kind: &str) -> String {
    format!("{}/{} ({kind})", key.0, key.1)
}
