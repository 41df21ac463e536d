//! `localityLbSetting`: which of a cluster's endpoints take requests first, by where they
//! run relative to the waypoint, as Istio programs Envoy.
//!
//! Istio enables locality load balancing mesh-wide, so a DestinationRule without
//! `localityLbSetting` gets it too; `enabled: false` turns it off. Two modes:
//! - **failover** (the default), only when the cluster has `outlierDetection` (without
//!   it nothing would ever move traffic down a level, so Istio does not rank): endpoints
//!   are ranked in priority levels — same region, zone and subzone; same region and
//!   zone; same region; then, when a `failover` entry's `from` is the waypoint's region,
//!   its `to` region; then the rest. With `failoverPriority` (label keys, in order;
//!   `key=value` compares with `value` instead of the waypoint's own), an endpoint
//!   ranks by the longest prefix of the keys on which its labels equal the waypoint
//!   pod's (the locality keys `topology.kubernetes.io/region`, `…/zone` and
//!   `topology.istio.io/subzone` read the localities), and the locality ranking applies
//!   within each of those levels only when `failover` is set too. Each level takes the
//!   share of requests its health allows (Envoy's overprovisioning factor 1.4: a level
//!   with h% of its endpoints not ejected takes min(100, 1.4·h)%), the remainder spills
//!   to the next level; when all levels together are below 100%, the shares are scaled
//!   up to 100% (Istio turns Envoy's panic mode off).
//! - **distribute**: the first entry whose `from` pattern matches the waypoint's
//!   locality spreads requests over the endpoints' localities matching its `to`
//!   patterns, by weight (a pattern's weight is shared by the localities it matches in
//!   proportion to their endpoints); localities no pattern names get nothing. A
//!   locality's weight shrinks with its health as a level's share does.
//!
//! The cluster's balancer then picks within the level or locality chosen, among the
//! endpoints not ejected. A consistent hash chooses the level from the request's hash,
//! so a key stays put while health does not change.

use std::collections::BTreeMap;

use ambit_api::{
    istio::destination_rule::LocalityLbSetting,
    locality::{Locality, LocalityError, LocalityPattern, REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL},
};

use crate::config::Endpoint;

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING_PERCENT: f64 = 140.0;
/// How many ranks locality failover gives (0 to 4): Istio multiplies a
/// `failoverPriority` level by it to rank by locality within it.
const LOCALITY_RANKS: u32 = 5;

/// A `distribute` entry: where requests come from, and the weight of where they go.
#[derive(Debug, Clone)]
struct Distribute {
    from: LocalityPattern,
    to: Vec<(LocalityPattern, u32)>,
}

/// A compiled `localityLbSetting` (or Istio's mesh default when a rule has none).
#[derive(Debug, Clone)]
pub struct LocalitySetting {
    enabled: bool,
    distribute: Vec<Distribute>,
    /// `(from, to)` regions.
    failover: Vec<(String, String)>,
    /// Label keys, best first, each with the value compared instead of the proxy's.
    failover_priority: Vec<(String, Option<String>)>,
}

impl Default for LocalitySetting {
    /// Istio's mesh default: enabled, failover by locality.
    fn default() -> Self {
        Self {
            enabled: true,
            distribute: Vec::new(),
            failover: Vec::new(),
            failover_priority: Vec::new(),
        }
    }
}

/// Who the proxy is, as endpoints are ranked from it: its locality and its pod's
/// labels.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub locality: &'a Locality,
    pub labels: &'a BTreeMap<String, String>,
}

/// What is wrong with a `localityLbSetting`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("`{field}` {source}")]
    Pattern {
        field: String,
        source: LocalityError,
    },
}

impl LocalitySetting {
    /// Compiles `spec`, found at `field`.
    ///
    /// # Errors
    /// A locality that is no pattern.
    pub fn new(spec: &LocalityLbSetting, field: &str) -> Result<Self, SettingError> {
        let pattern = |text: &str, at: String| {
            text.parse::<LocalityPattern>()
                .map_err(|source| SettingError::Pattern { field: at, source })
        };
        let distribute = spec
            .distribute
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let at = format!("{field}.distribute[{i}]");
                Ok(Distribute {
                    from: pattern(&entry.from, format!("{at}.from"))?,
                    to: entry
                        .to
                        .iter()
                        .map(|(to, weight)| Ok((pattern(to, format!("{at}.to.{to}"))?, *weight)))
                        .collect::<Result<_, SettingError>>()?,
                })
            })
            .collect::<Result<_, SettingError>>()?;
        Ok(Self {
            enabled: spec.enabled.unwrap_or(true),
            distribute,
            failover: spec
                .failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect(),
            failover_priority: spec
                .failover_priority
                .iter()
                .map(|key| match key.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                    None => (key.clone(), None),
                })
                .collect(),
        })
    }

    /// How a cluster with `endpoints` (in the cluster's order) balances for a proxy
    /// that is `origin`; `outlier`: whether the cluster has `outlierDetection`. `None`
    /// when locality changes nothing.
    #[must_use]
    pub fn for_cluster(
        &self,
        origin: Origin<'_>,
        outlier: bool,
        endpoints: &[&Endpoint],
    ) -> Option<LocalityLb> {
        if !self.enabled {
            return None;
        }
        if !self.distribute.is_empty() {
            let entry = self
                .distribute
                .iter()
                .find(|d| d.from.matches(origin.locality))?;
            let localities: Vec<&Locality> = endpoints.iter().map(|e| &e.locality).collect();
            return Some(LocalityLb::weighted(&entry.to, &localities));
        }
        if !outlier {
            return None;
        }
        let ranks: Vec<u32> = endpoints
            .iter()
            .map(|endpoint| self.rank(origin, endpoint))
            .collect();
        LocalityLb::ranked(&ranks)
    }

    /// Istio's priority of `endpoint` for a proxy that is `origin`, before the levels
    /// are numbered consecutively: by `failoverPriority`, then by locality within it
    /// (when `failover` is set, or `failoverPriority` is not).
    fn rank(&self, origin: Origin<'_>, endpoint: &Endpoint) -> u32 {
        let by_locality = self.locality_rank(origin.locality, &endpoint.locality);
        // Istio ranks by labels only when it knows the proxy's.
        if self.failover_priority.is_empty() || origin.labels.is_empty() {
            return by_locality;
        }
        let by_labels = self.label_rank(origin, endpoint);
        if self.failover.is_empty() {
            by_labels
        } else {
            by_labels * LOCALITY_RANKS + by_locality
        }
    }

    /// How many of the `failoverPriority` keys, counted from the last, are not in the
    /// longest prefix on which `endpoint` agrees with `origin`: 0 when it agrees on all.
    fn label_rank(&self, origin: Origin<'_>, endpoint: &Endpoint) -> u32 {
        let keys = self.failover_priority.len();
        let agreed = self
            .failover_priority
            .iter()
            .take_while(|(key, fixed)| {
                let wanted = fixed
                    .as_deref()
                    .unwrap_or_else(|| label(origin.labels, origin.locality, key));
                wanted == label(&endpoint.labels, &endpoint.locality, key)
            })
            .count();
        u32::try_from(keys - agreed).unwrap_or(u32::MAX)
    }

    /// Istio's priority of an endpoint at `endpoint` for a proxy at `own`, by locality
    /// alone.
    fn locality_rank(&self, own: &Locality, endpoint: &Locality) -> u32 {
        if own.region != endpoint.region {
            let failover = self.failover.iter().find(|(from, _)| *from == own.region);
            return match failover {
                Some((_, to)) if *to != endpoint.region => 4,
                _ => 3,
            };
        }
        if own.zone != endpoint.zone {
            2
        } else if own.subzone != endpoint.subzone {
            1
        } else {
            0
        }
    }
}

/// How a cluster's endpoints are grouped for a request: by priority level, or by
/// locality with weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalityLb {
    /// Each endpoint's group (its level, or its locality); `None`: in no group (no
    /// `to` pattern names its locality), never picked.
    groups: Vec<Option<usize>>,
    shares: Shares,
}

/// How groups share requests.
#[derive(Debug, Clone, PartialEq)]
enum Shares {
    /// Levels, 0 the best, numbered consecutively: this many.
    Ranked(usize),
    /// Localities, each with its weight.
    Weighted(Vec<u32>),
}

/// The value of label `key` of a workload with `labels` at `locality`: the locality
/// keys read the locality when it is known, as Istio adds them to workloads' labels.
fn label<'a>(labels: &'a BTreeMap<String, String>, locality: &'a Locality, key: &str) -> &'a str {
    let located = match key {
        REGION_LABEL => Some(&locality.region),
        ZONE_LABEL => Some(&locality.zone),
        SUBZONE_LABEL => Some(&locality.subzone),
        _ => None,
    };
    located
        .filter(|value| !value.is_empty())
        .or_else(|| labels.get(key))
        .map_or("", String::as_str)
}

impl LocalityLb {
    /// Levels from Istio's priorities, numbered consecutively; `None` when they are
    /// all the same.
    fn ranked(ranks: &[u32]) -> Option<Self> {
        let mut distinct = ranks.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        (distinct.len() > 1).then(|| Self {
            groups: ranks
                .iter()
                .map(|rank| distinct.binary_search(rank).ok())
                .collect(),
            shares: Shares::Ranked(distinct.len()),
        })
    }

    /// Groups by locality, weighted as Istio's `applyLocalityWeights` does: each `to`
    /// pattern, in turn, takes the localities no earlier one took, and shares its weight
    /// among them in proportion to their endpoints (rounded up).
    fn weighted(to: &[(LocalityPattern, u32)], endpoints: &[&Locality]) -> Self {
        let mut localities: Vec<(&Locality, u32)> = Vec::new();
        for endpoint in endpoints {
            match localities.iter_mut().find(|(l, _)| l == endpoint) {
                Some((_, count)) => *count += 1,
                None => localities.push((endpoint, 1)),
            }
        }
        let mut weight_of: Vec<Option<u32>> = vec![None; localities.len()];
        for (pattern, weight) in to {
            let taken: Vec<usize> = (0..localities.len())
                .filter(|i| weight_of[*i].is_none() && pattern.matches(localities[*i].0))
                .collect();
            let total: u32 = taken.iter().map(|i| localities[*i].1).sum();
            for i in taken {
                let share = u64::from(localities[i].1) * u64::from(*weight);
                weight_of[i] =
                    Some(u32::try_from(share.div_ceil(u64::from(total))).unwrap_or(u32::MAX));
            }
        }
        let groups = endpoints
            .iter()
            .map(|endpoint| {
                let i = localities.iter().position(|(l, _)| l == endpoint)?;
                weight_of[i].map(|_| i)
            })
            .collect();
        Self {
            groups,
            shares: Shares::Weighted(
                weight_of
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            ),
        }
    }

    /// Keeps in `available` (each endpoint: not ejected) only the endpoints of the
    /// level or locality a request goes to; `draw`, in `0..1`, is where the request
    /// falls among the shares. Leaves none available when no group can take it.
    pub fn narrow(&self, available: &mut [bool], draw: f64) {
        let shares = match &self.shares {
            Shares::Ranked(count) => priority_load(&self.health(available, *count)),
            Shares::Weighted(weights) => {
                weighted_load(&self.health(available, weights.len()), weights)
            }
        };
        let chosen = choose(&shares, draw);
        for (yes, group) in available.iter_mut().zip(&self.groups) {
            *yes = *yes && chosen.is_some() && *group == chosen;
        }
    }

    /// Each of the `count` groups' health, 0 to 1: the share of its endpoints
    /// `available`, times the overprovisioning factor, capped at 1.
    fn health(&self, available: &[bool], count: usize) -> Vec<f64> {
        let mut total = vec![0_u32; count];
        let mut healthy = vec![0_u32; count];
        for (group, yes) in self.groups.iter().zip(available) {
            if let Some(group) = group {
                total[*group] += 1;
                healthy[*group] += u32::from(*yes);
            }
        }
        total
            .iter()
            .zip(&healthy)
            .map(|(total, healthy)| {
                if *total == 0 {
                    0.0
                } else {
                    (f64::from(*healthy) * OVERPROVISIONING_PERCENT / 100.0 / f64::from(*total))
                        .min(1.0)
                }
            })
            .collect()
    }
}

/// Envoy's priority load: each level in turn takes what its health allows of what is
/// left, health scaled up when all levels together fall short of 1.
fn priority_load(health: &[f64]) -> Vec<f64> {
    let total = health.iter().sum::<f64>().min(1.0);
    if total <= 0.0 {
        return vec![0.0; health.len()];
    }
    let mut left = 1.0_f64;
    health
        .iter()
        .map(|h| {
            let load = (h / total).min(left);
            left -= load;
            load
        })
        .collect()
}

/// Each locality's share: its weight times its health, of the sum of them.
fn weighted_load(health: &[f64], weights: &[u32]) -> Vec<f64> {
    let effective: Vec<f64> = health
        .iter()
        .zip(weights)
        .map(|(h, w)| h * f64::from(*w))
        .collect();
    let total: f64 = effective.iter().sum();
    if total <= 0.0 {
        return vec![0.0; health.len()];
    }
    effective.iter().map(|e| e / total).collect()
}

/// The group whose cumulative share `draw` falls in; `None` when all shares are 0.
fn choose(shares: &[f64], draw: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    let mut last = None;
    for (group, share) in shares.iter().enumerate() {
        if *share <= 0.0 {
            continue;
        }
        cumulative += share;
        last = Some(group);
        if draw < cumulative {
            return last;
        }
    }
    // Rounding may leave the cumulative sum a hair below 1.
    last
}

#[cfg(test)]
mod tests;
