//! VirtualService delegation, merged the way Istio merges it: an HTTP route of a root
//! VirtualService that says `delegate: {name, namespace}` is replaced, in place and in
//! order, by the HTTP routes of that VirtualService (the delegate, which has no
//! `hosts`).
//!
//! - **Matches**: every match of a delegate route must narrow some match of the root
//!   route (Istio's `hasConflict`): a prefix or exact value within the root's prefix, the
//!   root's exact value, the same regex, the same port, labels and namespace the root
//!   asks for; it is merged with each root match it narrows (fields it leaves unset come
//!   from the root, header and query conditions add up). A delegate route with a match
//!   that narrows none is left out ([`Conflict`]); the others stay.
//! - **Other fields**: a delegate route inherits from the root route what it leaves
//!   unset — `rewrite`, `timeout`, `retries`, `fault`, `mirror`, `mirrors`,
//!   `mirrorPercentage`, `corsPolicy`, `headers` — and their names join (`root-leaf`).
//! - **Usable delegates** exist, have no `hosts` and are exported to the root's
//!   namespace ([`Unusable`] otherwise: the delegating route is left out, as Istio
//!   does, and the root's other routes apply).
//! - Short host names in a delegate's destinations are resolved in the delegate's
//!   namespace, so they keep their meaning once merged into a root elsewhere.
//!
//! Validation warns with these reasons ([`crate::validate`]); the mesh merges each root
//! with the delegates it holds, last good versions included ([`crate::mesh`]). One level
//! only: validation refuses a delegate whose routes delegate again.

use std::collections::BTreeMap;

use ambit_api::istio::{
    StringMatch, VirtualServiceSpec,
    virtual_service::{Delegate, Destination, HttpMatchRequest, HttpRoute},
};

use crate::hosts;

/// `(namespace, name)` of a VirtualService.
pub(crate) type Target = (String, String);

/// Why a delegate cannot serve a root's route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no VirtualService {0}: correct the delegate's `name` and `namespace`, or add it")]
    Missing(String),
    #[error("{0} has `hosts`, so it is a root, not a delegate: remove its hosts")]
    HasHosts(String),
    #[error(
        "{target} is not exported to namespace `{namespace}`: add it to the delegate's `exportTo`"
    )]
    NotExported { target: String, namespace: String },
}

/// A delegate route's match that narrows no match of the root route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Conflict {
    /// The index of the delegate route's match.
    pub index: usize,
    /// Why it is not within the root's first match.
    pub detail: String,
}

/// The VirtualService a route of a root in `root_namespace` delegates to (the root's
/// namespace when the delegate names none).
pub(crate) fn target(delegate: &Delegate, root_namespace: &str) -> Target {
    let namespace = if delegate.namespace.is_empty() {
        root_namespace
    } else {
        &delegate.namespace
    };
    (namespace.to_owned(), delegate.name.clone())
}

/// The delegate `target`'s spec (`found`, if it exists), when it can serve a root of
/// `root_namespace`.
pub(crate) fn usable<'a>(
    target: &Target,
    found: Option<&'a VirtualServiceSpec>,
    root_namespace: &str,
) -> Result<&'a VirtualServiceSpec, Unusable> {
    let label = format!("{}/{}", target.0, target.1);
    let spec = found.ok_or_else(|| Unusable::Missing(label.clone()))?;
    if !spec.hosts.is_empty() {
        return Err(Unusable::HasHosts(label));
    }
    if !hosts::visible(&spec.export_to, &target.0, root_namespace) {
        return Err(Unusable::NotExported {
            target: label,
            namespace: root_namespace.to_owned(),
        });
    }
    Ok(spec)
}

/// `spec` (a root in `namespace`) with each delegating HTTP route replaced by its
/// delegate's routes merged into it; `delegates` holds the VirtualServices by
/// [`Target`]. Routes whose delegate is unusable or whose match conflicts are left out.
pub(crate) fn expand(
    spec: &VirtualServiceSpec,
    namespace: &str,
    delegates: &BTreeMap<Target, VirtualServiceSpec>,
) -> VirtualServiceSpec {
    let mut expanded = spec.clone();
    expanded.http = spec
        .http
        .iter()
        .flat_map(|route| {
            let Some(delegate) = &route.delegate else {
                return vec![route.clone()];
            };
            let target = target(delegate, namespace);
            usable(&target, delegates.get(&target), namespace)
                .map(|found| {
                    found
                        .http
                        .iter()
                        .filter_map(|leaf| merge_route(route, leaf, &target.0).ok())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    expanded
}

/// The delegate route `leaf` (of a delegate in `leaf_namespace`) merged into the root
/// route `root`.
fn merge_route(
    root: &HttpRoute,
    leaf: &HttpRoute,
    leaf_namespace: &str,
) -> Result<HttpRoute, Conflict> {
    let mut merged = leaf.clone();
    merged.matches = merge_matches(&root.matches, &leaf.matches)?;
    merged.name = joined(&root.name, &leaf.name);
    inherit(&mut merged.rewrite, &root.rewrite);
    inherit(&mut merged.timeout, &root.timeout);
    inherit(&mut merged.retries, &root.retries);
    inherit(&mut merged.fault, &root.fault);
    inherit(&mut merged.mirror, &root.mirror);
    inherit(&mut merged.mirror_percentage, &root.mirror_percentage);
    inherit(&mut merged.mirror_percent, &root.mirror_percent);
    inherit(&mut merged.cors_policy, &root.cors_policy);
    inherit(&mut merged.headers, &root.headers);
    if merged.mirrors.is_empty() {
        merged.mirrors.clone_from(&root.mirrors);
    }
    let qualify = |destination: &mut Destination| {
        destination.host = hosts::resolve(&destination.host, leaf_namespace);
    };
    merged
        .route
        .iter_mut()
        .for_each(|target| qualify(&mut target.destination));
    merged
        .mirrors
        .iter_mut()
        .for_each(|mirror| qualify(&mut mirror.destination));
    merged.mirror.iter_mut().for_each(qualify);
    Ok(merged)
}

/// The matches of a delegate route (`leaf`) merged with the root route's: each leaf
/// match with each root match it narrows, in order. No matches on one side means the
/// other side's.
pub(crate) fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Result<Vec<HttpMatchRequest>, Conflict> {
    if root.is_empty() {
        return Ok(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Ok(root.to_vec());
    }
    let mut merged = Vec::new();
    for (index, narrow) in leaf.iter().enumerate() {
        let before = merged.len();
        let mut first_conflict = None;
        for wide in root {
            match conflict(wide, narrow) {
                Some(detail) => {
                    first_conflict.get_or_insert(detail);
                }
                None => merged.push(merge_match(wide, narrow)),
            }
        }
        if merged.len() == before {
            return Err(Conflict {
                index,
                detail: first_conflict.unwrap_or_default(),
            });
        }
    }
    Ok(merged)
}

/// Why `narrow` is not within `wide`, naming the first field that is not.
fn conflict(wide: &HttpMatchRequest, narrow: &HttpMatchRequest) -> Option<String> {
    let strings = [
        ("uri", &wide.uri, &narrow.uri),
        ("scheme", &wide.scheme, &narrow.scheme),
        ("method", &wide.method, &narrow.method),
        ("authority", &wide.authority, &narrow.authority),
    ];
    for (field, wide, narrow) in strings {
        if let (Some(wide), Some(narrow)) = (wide, narrow)
            && let Some(why) = string_conflict(field, wide, narrow)
        {
            return Some(why);
        }
    }
    let maps = [
        ("headers", &wide.headers, &narrow.headers),
        (
            "withoutHeaders",
            &wide.without_headers,
            &narrow.without_headers,
        ),
        ("queryParams", &wide.query_params, &narrow.query_params),
    ];
    for (field, wide, narrow) in maps {
        for (key, condition) in narrow {
            if let Some(root) = wide.get(key)
                && let Some(why) = string_conflict(&format!("{field}.{key}"), root, condition)
            {
                return Some(why);
            }
        }
    }
    if wide.ignore_uri_case != narrow.ignore_uri_case {
        return Some("`ignoreUriCase` differs from the root's".to_owned());
    }
    if let (Some(root), Some(port)) = (wide.port, narrow.port)
        && root != port
    {
        return Some(format!("`port` {port} is not the root's {root}"));
    }
    if !wide.source_namespace.is_empty() && narrow.source_namespace != wide.source_namespace {
        return Some(format!(
            "`sourceNamespace` is not the root's `{}`",
            wide.source_namespace
        ));
    }
    for (key, value) in &narrow.source_labels {
        if let Some(root) = wide.source_labels.get(key)
            && root != value
        {
            return Some(format!(
                "`sourceLabels.{key}` is `{value}`, the root's `{root}`"
            ));
        }
    }
    if !wide.gateways.is_empty()
        && let Some(gateway) = narrow.gateways.iter().find(|g| !wide.gateways.contains(g))
    {
        return Some(format!("gateway `{gateway}` is not among the root's"));
    }
    None
}

/// Why `narrow` does not narrow `wide`, if it does not.
fn string_conflict(field: &str, wide: &StringMatch, narrow: &StringMatch) -> Option<String> {
    use StringMatch::{Exact, Prefix, Present, Regex};
    let within = match (wide, narrow) {
        (Present, _) => true,
        (Exact(root), Exact(value)) | (Regex(root), Regex(value)) => root == value,
        (Prefix(root), Exact(value) | Prefix(value)) => value.starts_with(root.as_str()),
        _ => false,
    };
    if within {
        None
    } else {
        Some(format!(
            "`{field}` {} is not within the root's {}",
            describe(narrow),
            describe(wide)
        ))
    }
}

fn describe(condition: &StringMatch) -> String {
    match condition {
        StringMatch::Exact(value) => format!("exact `{value}`"),
        StringMatch::Prefix(value) => format!("prefix `{value}`"),
        StringMatch::Regex(value) => format!("regex `{value}`"),
        StringMatch::Present => "presence".to_owned(),
    }
}

/// `narrow` with what it leaves unset taken from `wide`; header, query and label
/// conditions of both.
fn merge_match(wide: &HttpMatchRequest, narrow: &HttpMatchRequest) -> HttpMatchRequest {
    let mut merged = narrow.clone();
    merged.name = joined(&wide.name, &narrow.name);
    inherit(&mut merged.uri, &wide.uri);
    inherit(&mut merged.scheme, &wide.scheme);
    inherit(&mut merged.method, &wide.method);
    inherit(&mut merged.authority, &wide.authority);
    inherit(&mut merged.port, &wide.port);
    for (into, from) in [
        (&mut merged.headers, &wide.headers),
        (&mut merged.without_headers, &wide.without_headers),
        (&mut merged.query_params, &wide.query_params),
    ] {
        for (key, condition) in from {
            into.entry(key.clone()).or_insert_with(|| condition.clone());
        }
    }
    for (key, value) in &wide.source_labels {
        merged
            .source_labels
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    if merged.source_namespace.is_empty() {
        merged.source_namespace.clone_from(&wide.source_namespace);
    }
    if merged.gateways.is_empty() {
        merged.gateways.clone_from(&wide.gateways);
    }
    if merged.stat_prefix.is_empty() {
        merged.stat_prefix.clone_from(&wide.stat_prefix);
    }
    merged
}

fn inherit<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
    if field.is_none() {
        field.clone_from(root);
    }
}

/// Istio's name for a merged route or match: `root-leaf`, or whichever is set.
fn joined(root: &str, leaf: &str) -> String {
    match (root.is_empty(), leaf.is_empty()) {
        (_, true) => root.to_owned(),
        (true, false) => leaf.to_owned(),
        (false, false) => format!("{root}-{leaf}"),
    }
}

#[cfg(test)]
mod tests;
