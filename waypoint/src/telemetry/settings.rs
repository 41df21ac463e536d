//! What the Telemetry objects that apply to this proxy say: access logging on or off,
//! and the share of new traces sampled. The most specific object that sets a field
//! wins — one attached to this proxy (a `selector` matching its pod's labels, or
//! `targetRefs` naming its Gateway), then one for its namespace, then the root
//! namespace's (the mesh's default); ties go to the first by `namespace/name`. With none,
//! access logging is on and sampling comes from the proxy's flag.

use ambit_api::istio::{DEFAULT_ROOT_NAMESPACE, TelemetrySpec};

use crate::config::{Config, Named};

/// The settings in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelemetrySettings {
    pub access_logging: bool,
    /// `None`: the proxy's own (its `--trace-sampling`).
    pub trace_sampling_percent: Option<f64>,
}

impl TelemetrySettings {
    /// The settings of `config`'s Telemetry objects for its proxy.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        let mut applying: Vec<(u8, &Named<TelemetrySpec>)> = config
            .telemetries
            .iter()
            .filter_map(|telemetry| Some((specificity(config, telemetry)?, telemetry)))
            .collect();
        applying.sort_by(|(a, x), (b, y)| {
            b.cmp(a)
                .then((&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)))
        });
        let access_logging = applying
            .iter()
            .find(|(_, telemetry)| !telemetry.spec.access_logging.is_empty())
            .is_none_or(|(_, telemetry)| {
                telemetry
                    .spec
                    .access_logging
                    .iter()
                    .any(|logging| logging.disabled != Some(true))
            });
        let trace_sampling_percent = applying.iter().find_map(|(_, telemetry)| {
            telemetry.spec.tracing.iter().find_map(|tracing| {
                if tracing.disable_span_reporting == Some(true) {
                    Some(0.0)
                } else {
                    tracing.random_sampling_percentage
                }
            })
        });
        Self {
            access_logging,
            trace_sampling_percent,
        }
    }
}

/// How specifically `telemetry` applies to `config`'s proxy (2: attached to it, 1: its
/// namespace, 0: the mesh), or `None` when it does not.
fn specificity(config: &Config, telemetry: &Named<TelemetrySpec>) -> Option<u8> {
    let spec = &telemetry.spec;
    let references: Vec<_> = spec.target_ref.iter().chain(&spec.target_refs).collect();
    if !references.is_empty() {
        let names_this_gateway = references.iter().any(|reference| {
            let namespace = Some(reference.namespace.as_str())
                .filter(|ns| !ns.is_empty())
                .unwrap_or(&telemetry.namespace);
            reference.group == "gateway.networking.k8s.io"
                && reference.kind == "Gateway"
                && reference.name == config.name
                && namespace == config.namespace
        });
        return names_this_gateway.then_some(2);
    }
    let in_scope = telemetry.namespace == config.namespace;
    match &spec.selector {
        Some(selector) => {
            let selects = selector
                .match_labels
                .iter()
                .all(|(key, value)| config.labels.get(key) == Some(value));
            (in_scope && selects).then_some(2)
        }
        None if in_scope => Some(1),
        None => (telemetry.namespace == DEFAULT_ROOT_NAMESPACE).then_some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(namespace: &str, name: &str, yaml: &str) -> Named<TelemetrySpec> {
        Named {
            namespace: namespace.into(),
            name: name.into(),
            spec: serde_yaml_ng::from_str(yaml).expect("a Telemetry"),
        }
    }

    fn proxy(telemetries: Vec<Named<TelemetrySpec>>) -> Config {
        Config {
            namespace: "shop".into(),
            name: "waypoint".into(),
            telemetries,
            labels: [(
                "gateway.networking.k8s.io/gateway-name".to_owned(),
                "waypoint".to_owned(),
            )]
            .into(),
            ..Config::default()
        }
    }

    #[test]
    fn none_leaves_logs_on_and_the_flags_sampling() {
        assert_eq!(
            TelemetrySettings::of(&proxy(Vec::new())),
            TelemetrySettings {
                access_logging: true,
                trace_sampling_percent: None
            }
        );
    }

    #[test]
    fn the_most_specific_setting_of_each_field_wins() {
        let mesh = telemetry(
            "istio-system",
            "mesh-default",
            "{accessLogging: [{disabled: true}], tracing: [{randomSamplingPercentage: 1}]}",
        );
        let namespace = telemetry(
            "shop",
            "logs",
            "{accessLogging: [{providers: [{name: envoy}]}]}",
        );
        let other = telemetry("other", "x", "{tracing: [{randomSamplingPercentage: 50}]}");
        let attached = telemetry(
            "shop",
            "waypoint",
            "{targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}], tracing: [{randomSamplingPercentage: 100}]}",
        );
        let settings = |telemetries| TelemetrySettings::of(&proxy(telemetries));
        assert_eq!(
            settings(vec![mesh.clone()]),
            TelemetrySettings {
                access_logging: false,
                trace_sampling_percent: Some(1.0)
            }
        );
        assert_eq!(
            settings(vec![mesh, namespace, other, attached]),
            TelemetrySettings {
                access_logging: true,
                trace_sampling_percent: Some(100.0)
            },
            "the namespace's turns logs back on, the waypoint's own sets its sampling"
        );
        let elsewhere = telemetry(
            "shop",
            "ingress",
            "{selector: {matchLabels: {istio: ingressgateway}}, accessLogging: [{disabled: true}]}",
        );
        assert!(
            settings(vec![elsewhere]).access_logging,
            "selects another pod"
        );
    }
}
