//! `StringMatch`: how a URI, authority, method, header or query parameter is matched.
//!
//! Istio writes it as an object with exactly one of `exact`, `prefix` or `regex`
//! (`uri: {prefix: /api}`). In `headers`, `queryParams` and `withoutHeaders` an empty
//! object `{}` is also allowed and means "present, whatever the value".

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// One string condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawStringMatch", into = "RawStringMatch")]
pub enum StringMatch {
    /// `{exact: v}`: the whole value equals `v`.
    Exact(String),
    /// `{prefix: v}`: the value starts with `v`.
    Prefix(String),
    /// `{regex: v}`: the whole value matches the RE2 expression `v`.
    Regex(String),
    /// `{}`: the header or query parameter is present, whatever its value. Only
    /// meaningful in `headers` / `queryParams` / `withoutHeaders`; a validator should
    /// reject it elsewhere.
    Present,
}

impl StringMatch {
    /// The regular expression, for a `regex` match.
    #[must_use]
    pub fn regex(&self) -> Option<&str> {
        match self {
            Self::Regex(pattern) => Some(pattern),
            _ => None,
        }
    }
}

/// The wire form: Istio's proto oneof, as three optional fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
struct RawStringMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

/// A match that sets more than one of `exact`, `prefix` and `regex`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sets {0}: a string match takes exactly one of `exact`, `prefix` or `regex`")]
pub struct AmbiguousMatch(String);

impl TryFrom<RawStringMatch> for StringMatch {
    type Error = AmbiguousMatch;

    fn try_from(raw: RawStringMatch) -> Result<Self, Self::Error> {
        match (raw.exact, raw.prefix, raw.regex) {
            (Some(exact), None, None) => Ok(Self::Exact(exact)),
            (None, Some(prefix), None) => Ok(Self::Prefix(prefix)),
            (None, None, Some(regex)) => Ok(Self::Regex(regex)),
            (None, None, None) => Ok(Self::Present),
            (exact, prefix, regex) => {
                let set: Vec<&str> = [
                    exact.map(|_| "`exact`"),
                    prefix.map(|_| "`prefix`"),
                    regex.map(|_| "`regex`"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(AmbiguousMatch(set.join(" and ")))
            }
        }
    }
}

impl From<StringMatch> for RawStringMatch {
    fn from(value: StringMatch) -> Self {
        let mut raw = Self::default();
        match value {
            StringMatch::Exact(v) => raw.exact = Some(v),
            StringMatch::Prefix(v) => raw.prefix = Some(v),
            StringMatch::Regex(v) => raw.regex = Some(v),
            StringMatch::Present => {}
        }
        raw
    }
}

impl JsonSchema for StringMatch {
    fn schema_name() -> Cow<'static, str> {
        "StringMatch".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        RawStringMatch::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(yaml: &str) -> Result<StringMatch, String> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        serde_yaml_ng::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_each_kind_of_match() {
        assert_eq!(decode("exact: GET"), Ok(StringMatch::Exact("GET".into())));
        assert_eq!(
            decode("prefix: /api"),
            Ok(StringMatch::Prefix("/api".into()))
        );
        assert_eq!(
            decode("regex: ^/v[0-9]+"),
            Ok(StringMatch::Regex("^/v[0-9]+".into()))
        );
        assert_eq!(decode("{}"), Ok(StringMatch::Present));
    }

    #[test]
    fn two_kinds_at_once_are_refused_by_name() {
        let error = decode("{exact: a, regex: b}").unwrap_err();
        assert_eq!(
            error,
            "sets `exact` and `regex`: a string match takes exactly one of `exact`, `prefix` or `regex`"
        );
    }

    #[test]
    fn writes_the_wire_form_back() {
        let yaml = serde_yaml_ng::to_string(&StringMatch::Prefix("/a".into())).unwrap();
        assert_eq!(yaml.trim(), "prefix: /a");
    }
}
