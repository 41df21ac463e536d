//! VirtualService delegation over the model: each root VirtualService (one with a
//! `delegate` route) gets its routes merged with the delegates the model holds
//! ([`Route::delegated`], what waypoints receive), computed again on every resolve.
//!
//! It runs after the last good versions are kept, so a delegate that turns invalid
//! still serves its roots at its last good version, and a root kept at its last good
//! version is merged with today's delegates. A delegate that is missing, has hosts, is
//! not exported to the root's namespace, or a delegate route whose match conflicts, is
//! left out of the root, as Istio does (validation warned about it).

use std::{collections::BTreeMap, sync::Arc};

use ambit_api::istio::VirtualServiceSpec;

use super::{Mesh, Route, RouteKind};
use crate::delegation::{self, Target};

/// Sets [`Route::delegated`] on every VirtualService of `mesh`.
pub(crate) fn resolve(mesh: &mut Mesh) {
    let spec_of = |route: &Route| serde_json::from_value::<VirtualServiceSpec>(route.spec.clone());
    // Only roots and delegates are read back; most VirtualServices are neither.
    let virtual_services = || {
        mesh.routes
            .iter()
            .filter(|((kind, _), _)| *kind == RouteKind::VirtualService)
    };
    let delegates: BTreeMap<Target, VirtualServiceSpec> = virtual_services()
        .filter(|(_, route)| route.is_delegate())
        .filter_map(|((_, key), route)| Some((key.clone(), spec_of(route).ok()?)))
        .collect();
    let merged: Vec<_> = virtual_services()
        .map(|((kind, key), route)| {
            let delegated = is_root(route)
                .then(|| spec_of(route).ok())
                .flatten()
                .map(|spec| delegation::expand(&spec, &key.0, &delegates))
                .and_then(|spec| serde_json::to_value(spec).ok());
            ((*kind, key.clone()), delegated)
        })
        .collect();
    for (key, delegated) in merged {
        if let Some(route) = mesh.routes.get_mut(&key)
            && route.delegated != delegated
        {
            Arc::make_mut(route).delegated = delegated;
        }
    }
}

/// Whether `route` has an HTTP route that delegates.
fn is_root(route: &Route) -> bool {
    route.spec["http"]
        .as_array()
        .is_some_and(|routes| routes.iter().any(|r| !r["delegate"].is_null()))
}
