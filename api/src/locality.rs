//! Where a workload runs, as Istio names it: `region/zone/subzone`.
//!
//! A pod's locality is its node's `topology.kubernetes.io/region`,
//! `topology.kubernetes.io/zone` and `topology.istio.io/subzone` labels, unless the pod's
//! own `istio-locality` label (`region.zone.subzone`: label values cannot hold `/`) says
//! otherwise. A DestinationRule's `localityLbSetting` names localities by pattern
//! ([`LocalityPattern`]): `region/zone/subzone`, where `*` stands for any value and
//! the segments left out match anything (`us-east/*`, `us-east`).

use std::{collections::BTreeMap, fmt, str::FromStr};

/// The node label that names its region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The node label that names its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The node label that names its subzone (Istio's own).
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// The pod label that overrides its node's locality, `region.zone.subzone`.
pub const POD_LOCALITY_LABEL: &str = "istio-locality";

/// A workload's region, zone and subzone; empty where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// The locality of a pod with `pod_labels` on a node with `node_labels` (`None`: the
    /// node is not known), as Istio reads it.
    #[must_use]
    pub fn of_pod(
        pod_labels: &BTreeMap<String, String>,
        node_labels: Option<&BTreeMap<String, String>>,
    ) -> Self {
        if let Some(label) = pod_labels.get(POD_LOCALITY_LABEL) {
            let mut parts = label.splitn(3, '.').map(str::to_owned);
            return Self {
                region: parts.next().unwrap_or_default(),
                zone: parts.next().unwrap_or_default(),
                subzone: parts.next().unwrap_or_default(),
            };
        }
        let label = |key: &str| {
            node_labels
                .and_then(|labels| labels.get(key))
                .cloned()
                .unwrap_or_default()
        };
        Self {
            region: label(REGION_LABEL),
            zone: label(ZONE_LABEL),
            subzone: label(SUBZONE_LABEL),
        }
    }

    /// Whether nothing is known of it.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)
    }
}

#[cfg(feature = "config")]
impl From<&Locality> for crate::config::Locality {
    fn from(locality: &Locality) -> Self {
        Self {
            region: locality.region.clone(),
            zone: locality.zone.clone(),
            subzone: locality.subzone.clone(),
        }
    }
}

#[cfg(feature = "config")]
impl From<crate::config::Locality> for Locality {
    fn from(locality: crate::config::Locality) -> Self {
        Self {
            region: locality.region,
            zone: locality.zone,
            subzone: locality.subzone,
        }
    }
}

/// Why a locality pattern is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalityError {
    #[error("is empty: name a locality, `region/zone/subzone` (`*` for any)")]
    Empty,
    #[error("`{0}` has more than three parts: use `region/zone/subzone`")]
    TooManyParts(String),
    #[error("`{0}` has an empty part: use `region/zone/subzone`, `*` for any")]
    EmptyPart(String),
    #[error("`{0}`: `*` stands for a whole part and only the last one (`region/*`)")]
    Wildcard(String),
}

/// A locality as `localityLbSetting` names one: up to three segments, the last of which
/// may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityPattern {
    /// `None` for `*` or a segment left out: any value.
    parts: [Option<String>; 3],
}

impl FromStr for LocalityPattern {
    type Err = LocalityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(LocalityError::Empty);
        }
        let segments: Vec<&str> = text.split('/').collect();
        if segments.len() > 3 {
            return Err(LocalityError::TooManyParts(text.to_owned()));
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(LocalityError::EmptyPart(text.to_owned()));
        }
        let last = segments.len() - 1;
        let misplaced = segments
            .iter()
            .enumerate()
            .any(|(i, s)| s.contains('*') && (*s != "*" || i != last));
        if misplaced {
            return Err(LocalityError::Wildcard(text.to_owned()));
        }
        let mut parts = [None, None, None];
        for (part, segment) in parts.iter_mut().zip(&segments) {
            *part = (*segment != "*").then(|| (*segment).to_owned());
        }
        Ok(Self { parts })
    }
}

impl LocalityPattern {
    /// Whether `locality` is one the pattern names (Istio's `LocalityMatch`).
    #[must_use]
    pub fn matches(&self, locality: &Locality) -> bool {
        [&locality.region, &locality.zone, &locality.subzone]
            .into_iter()
            .zip(&self.parts)
            .all(|(value, part)| part.as_ref().is_none_or(|part| part == value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn locality(region: &str, zone: &str, subzone: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            subzone: subzone.into(),
        }
    }

    #[test]
    fn a_pod_takes_its_nodes_locality_unless_its_label_says_otherwise() {
        let node = labels(&[
            (REGION_LABEL, "us-east"),
            (ZONE_LABEL, "us-east-1a"),
            (SUBZONE_LABEL, "rack-4"),
        ]);
        assert_eq!(
            Locality::of_pod(&BTreeMap::new(), Some(&node)),
            locality("us-east", "us-east-1a", "rack-4")
        );
        let pod = labels(&[(POD_LOCALITY_LABEL, "eu.eu-1b")]);
        assert_eq!(
            Locality::of_pod(&pod, Some(&node)),
            locality("eu", "eu-1b", "")
        );
        assert!(Locality::of_pod(&BTreeMap::new(), None).is_empty());
    }

    #[test]
    fn patterns_match_by_segment_and_wildcard() {
        let here = locality("us-east", "us-east-1a", "rack-4");
        for (pattern, expected) in [
            ("us-east/us-east-1a/rack-4", true),
            ("us-east/us-east-1a/*", true),
            ("us-east/*", true),
            ("us-east", true),
            ("*", true),
            ("us-east/us-east-1b/*", false),
            ("eu/*", false),
        ] {
            let parsed: LocalityPattern = pattern.parse().expect("a valid pattern");
            assert_eq!(parsed.matches(&here), expected, "{pattern}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for (pattern, expected) in [
            ("", LocalityError::Empty),
            ("a/b/c/d", LocalityError::TooManyParts("a/b/c/d".into())),
            ("a//c", LocalityError::EmptyPart("a//c".into())),
            ("*/b", LocalityError::Wildcard("*/b".into())),
            ("a/b*", LocalityError::Wildcard("a/b*".into())),
        ] {
            assert_eq!(
                pattern.parse::<LocalityPattern>(),
                Err(expected),
                "{pattern}"
            );
        }
    }
}
