//! Pass 2: a `spec` decoded into its type, with every unknown field and the first type
//! error reported at its field path (`spec.trafficPolicy.loadBalancer.simple`).
//!
//! Decoding goes through `serde_path_to_error` (where did it fail?) around
//! `serde_ignored` (which keys did no field take?). serde's messages speak Rust
//! (`expected u32`, `unknown variant`); [`plain`] rewrites them in the user's terms.

use serde::de::DeserializeOwned;

use super::{Findings, Reason, fields::key_path};

/// Decodes `value` as the `spec` of type `T`. Reports unknown fields and the first type
/// error into `findings`; returns the spec only if it decoded.
pub(super) fn spec<T: DeserializeOwned>(
    value: &serde_yaml_ng::Value,
    findings: &mut Findings,
) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| {
        let mut at = "spec".to_owned();
        ignored_path(&path, &mut at);
        unknown.push(at);
    };
    let result =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut record));
    for path in unknown {
        findings.add(path, Reason::UnknownField);
    }
    match result {
        Ok(spec) => Some(spec),
        Err(error) => {
            let mut at = "spec".to_owned();
            for segment in error.path() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        at.push_str(&format!("[{index}]"));
                    }
                    serde_path_to_error::Segment::Map { key }
                    | serde_path_to_error::Segment::Enum { variant: key } => {
                        at = key_path(&at, key);
                    }
                    serde_path_to_error::Segment::Unknown => at.push_str(".?"),
                }
            }
            findings.add(at, Reason::Decode(plain(&error.into_inner().to_string())));
            None
        }
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>, out: &mut String) {
    match path {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_path(parent, out);
            *out = key_path(out, key);
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent, out),
    }
}

/// serde's message in the user's terms: `unknown variant `FASTEST`, expected one of …`
/// becomes `unknown value `FASTEST`: use one of ROUND_ROBIN, …`; `expected u32` becomes
/// `expected a whole number`.
fn plain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((value, allowed)) = rest.split_once(", expected ")
    {
        let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
        let allowed: Vec<&str> = allowed
            .split(", ")
            .flat_map(|part| part.split(" or "))
            .map(|name| name.trim_matches('`'))
            .collect();
        return format!("unknown value {value}: use one of {}", allowed.join(", "));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!(
            "wrong type: found {}, expected {}",
            noun(found),
            noun(expected)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!("invalid value: found {found}, expected {}", noun(expected));
    }
    message.to_owned()
}

/// A serde type description as a YAML user would say it.
fn noun(serde_name: &str) -> &str {
    match serde_name {
        "u8" | "u16" | "u32" | "u64" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" | "sequence" => "a list",
        "a map" | "map" => "an object of `field: value`s",
        "unit value" => "an empty value",
        name if name.starts_with("struct ") => "an object of `field: value`s",
        name => name,
    }
}

#[cfg(test)]
mod tests {
    use ambit_api::istio::{DestinationRuleSpec, VirtualServiceSpec};

    use super::*;

    fn decode<T: DeserializeOwned>(yaml: &str) -> (Option<T>, Vec<(String, String)>) {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut findings = Findings::default();
        let spec = spec::<T>(&value, &mut findings);
        let found = findings
            .0
            .into_iter()
            .map(|(path, reason)| (path, reason.to_string()))
            .collect();
        (spec, found)
    }

    fn one(found: &[(String, String)]) -> (&str, &str) {
        assert_eq!(found.len(), 1, "expected one problem, found {found:?}");
        (found[0].0.as_str(), found[0].1.as_str())
    }

    #[test]
    fn a_valid_spec_decodes_without_findings() {
        let (spec, found) = decode::<VirtualServiceSpec>(
            "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n",
        );
        assert!(spec.is_some());
        assert_eq!(found, []);
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_path() {
        let (spec, found) = decode::<VirtualServiceSpec>(
            "hosts: [r]\nhtpp: []\nhttp:\n- rout: []\n  match:\n  - uri: {prefix: /, exactt: x}\n",
        );
        assert!(spec.is_some(), "unknown fields do not stop decoding");
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.htpp",
                "spec.http[0].rout",
                "spec.http[0].match[0].uri.exactt"
            ]
        );
        assert!(found[0].1.starts_with("unknown field"), "{found:?}");
    }

    #[test]
    fn an_unknown_enum_value_lists_the_allowed_ones() {
        let (spec, found) = decode::<DestinationRuleSpec>(
            "host: r\ntrafficPolicy:\n  loadBalancer: {simple: FASTEST}\n",
        );
        assert!(spec.is_none());
        assert_eq!(
            one(&found),
            (
                "spec.trafficPolicy.loadBalancer.simple",
                "unknown value `FASTEST`: use one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST"
            )
        );
    }

    #[test]
    fn a_wrong_type_names_the_field_and_both_types() {
        let (_, found) = decode::<VirtualServiceSpec>(
            "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r}\n    weight: fifty\n",
        );
        assert_eq!(
            one(&found),
            (
                "spec.http[0].route[0].weight",
                "wrong type: found string \"fifty\", expected a whole number"
            )
        );
        let (_, found) = decode::<VirtualServiceSpec>("hosts: reviews\n");
        assert_eq!(
            one(&found),
            (
                "spec.hosts",
                "wrong type: found string \"reviews\", expected a list"
            )
        );
    }

    #[test]
    fn a_bad_duration_or_string_match_says_why() {
        let (_, found) = decode::<VirtualServiceSpec>("hosts: [r]\nhttp:\n- timeout: 5 seconds\n");
        assert_eq!(
            one(&found),
            (
                "spec.http[0].timeout",
                "`5 seconds` is not a duration: write a number and a unit, for example `1.5s` or `250ms`"
            )
        );
        let (_, found) = decode::<VirtualServiceSpec>(
            "hosts: [r]\nhttp:\n- match:\n  - headers:\n      app.io/user: {exact: a, prefix: b}\n",
        );
        assert_eq!(
            one(&found),
            (
                "spec.http[0].match[0].headers[\"app.io/user\"]",
                "sets `exact` and `prefix`: a string match takes exactly one of `exact`, `prefix` or `regex`"
            )
        );
    }

    #[test]
    fn a_negative_unsigned_value_is_explained() {
        let (_, found) = decode::<VirtualServiceSpec>("hosts: [r]\ntcp:\n- match:\n  - port: -1\n");
        assert_eq!(
            one(&found),
            (
                "spec.tcp[0].match[0].port",
                "invalid value: found integer `-1`, expected a whole number of 0 or more"
            )
        );
    }
}
