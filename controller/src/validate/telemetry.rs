//! Pass 3 for a Telemetry: sampling percentages in range; what Ambit reads but does not
//! apply (metric overrides, span tags, log filters) is warned about, so a user is not
//! left believing it took effect.

use ambit_api::istio::TelemetrySpec;

use super::{Findings, Reason, fields};

/// Checks one Telemetry.
pub(super) fn check(spec: &TelemetrySpec, findings: &mut Findings) {
    for (i, tracing) in spec.tracing.iter().enumerate() {
        let path = format!("spec.tracing[{i}]");
        if let Some(percent) = tracing.random_sampling_percentage {
            fields::percent_value(
                findings,
                &format!("{path}.randomSamplingPercentage"),
                percent,
            );
        }
        if !tracing.custom_tags.is_empty() {
            findings.add(
                format!("{path}.customTags"),
                Reason::NotServed(
                    "ignored: Ambit's spans carry their standard tags only".to_owned(),
                ),
            );
        }
    }
    for (i, logging) in spec.access_logging.iter().enumerate() {
        if logging.filter.is_some() {
            findings.add(
                format!("spec.accessLogging[{i}].filter"),
                Reason::NotServed(
                    "ignored: every request is logged while access logging is on".to_owned(),
                ),
            );
        }
    }
    if !spec.metrics.is_empty() {
        findings.add(
            "spec.metrics",
            Reason::NotServed(
                "ignored: Ambit's proxies report Istio's standard metrics, unchanged".to_owned(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::validate_file;

    #[test]
    fn istios_mesh_default_is_valid_and_what_is_not_applied_is_warned_about() {
        let (lines, report) = validate_file(
            "telemetry.yaml",
            "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  tracing: [{randomSamplingPercentage: 10}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: tuned, namespace: shop}
spec:
  tracing: [{randomSamplingPercentage: 120, customTags: {team: {literal: {value: shop}}}}]
  accessLogging: [{filter: {expression: 'response.code >= 400'}}]
  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]
",
        );
        let at = "shop/tuned (Telemetry) in telemetry.yaml document 2";
        assert_eq!(
            lines,
            [
                format!(
                    "error: {at}: spec.tracing[0].randomSamplingPercentage: 120 is not a percentage: use a value from 0 to 100"
                ),
                format!(
                    "warning: {at}: spec.tracing[0].customTags: ignored: Ambit's spans carry their standard tags only"
                ),
                format!(
                    "warning: {at}: spec.accessLogging[0].filter: ignored: every request is logged while access logging is on"
                ),
                format!(
                    "warning: {at}: spec.metrics: ignored: Ambit's proxies report Istio's standard metrics, unchanged"
                ),
            ]
        );
        assert_eq!(
            report.model.telemetries.len(),
            1,
            "the mesh default is kept"
        );
    }
}
