//! `headers.request` / `headers.response`: headers to set, append and remove, checked
//! once when the table is compiled; and the hop-by-hop headers never forwarded.

use std::collections::BTreeMap;

use ambit_api::istio::virtual_service::{HeaderOperations, Headers};
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// A header operation that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("`{field}`: `{name}` is not a valid header name: use letters, digits and `-`")]
    Name { field: String, name: String },
    #[error(
        "`{field}`: the value of `{name}` is not a valid header value: remove control characters"
    )]
    Value { field: String, name: String },
}

/// One compiled `HeaderOperations`. Applied as Envoy does: removals first, then `set`
/// (replacing every value), then `add` (one more value, after any existing).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

/// The compiled request and response operations of one `headers` block.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl HeaderRules {
    /// Compiles a `headers` block; `field` prefixes error paths.
    pub fn compile(field: &str, headers: Option<&Headers>) -> Result<Self, Vec<HeaderError>> {
        let Some(headers) = headers else {
            return Ok(Self::default());
        };
        let request = HeaderOps::compile(&format!("{field}.request"), headers.request.as_ref());
        let response = HeaderOps::compile(&format!("{field}.response"), headers.response.as_ref());
        match (request, response) {
            (Ok(request), Ok(response)) => Ok(Self { request, response }),
            (request, response) => Err(request
                .err()
                .into_iter()
                .chain(response.err())
                .flatten()
                .collect()),
        }
    }
}

impl HeaderOps {
    fn compile(field: &str, ops: Option<&HeaderOperations>) -> Result<Self, Vec<HeaderError>> {
        let Some(ops) = ops else {
            return Ok(Self::default());
        };
        let mut errors = Vec::new();
        let set = pairs(&format!("{field}.set"), &ops.set, &mut errors);
        let add = pairs(&format!("{field}.add"), &ops.add, &mut errors);
        let remove = ops
            .remove
            .iter()
            .filter_map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| {
                        errors.push(HeaderError::Name {
                            field: format!("{field}.remove"),
                            name: name.clone(),
                        });
                    })
                    .ok()
            })
            .collect();
        if errors.is_empty() {
            Ok(Self { set, add, remove })
        } else {
            Err(errors)
        }
    }

    /// Applies the operations to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn pairs(
    field: &str,
    map: &BTreeMap<String, String>,
    errors: &mut Vec<HeaderError>,
) -> Vec<(HeaderName, HeaderValue)> {
    map.iter()
        .filter_map(|(name, value)| {
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(HeaderError::Name {
                    field: field.to_owned(),
                    name: name.clone(),
                });
                return None;
            };
            let Ok(value) = HeaderValue::from_str(value) else {
                errors.push(HeaderError::Value {
                    field: field.to_owned(),
                    name: name.clone(),
                });
                return None;
            };
            Some((header, value))
        })
        .collect()
}

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
];

/// Drops hop-by-hop headers (and those `Connection` names), keeping `te: trailers`,
/// which gRPC needs end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let trailers_accepted = headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if trailers_accepted {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> HeaderRules {
        let headers: Headers = serde_yaml_ng::from_str(yaml).expect("test headers are YAML");
        HeaderRules::compile("headers", Some(&headers)).expect("test headers compile")
    }

    #[test]
    fn remove_then_set_then_add() {
        let rules =
            rules("request: {set: {x-env: prod}, add: {x-tag: b}, remove: [x-secret, x-tag]}");
        let mut headers = HeaderMap::new();
        headers.insert("x-env", HeaderValue::from_static("dev"));
        headers.append("x-env", HeaderValue::from_static("test"));
        headers.insert("x-secret", HeaderValue::from_static("s"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        rules.request.apply(&mut headers);
        let values = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(values("x-env"), ["prod"], "set replaces every value");
        assert_eq!(values("x-secret"), Vec::<&str>::new(), "removed");
        assert_eq!(values("x-tag"), ["b"], "removed first, then added");
    }

    #[test]
    fn bad_names_and_values_are_all_reported() {
        let headers: Headers = serde_yaml_ng::from_str(
            "{request: {set: {'bad name': x}}, response: {add: {x-ok: \"a\\nb\"}, remove: ['a:b']}}",
        )
        .unwrap();
        let errors =
            HeaderRules::compile("http[0].headers", Some(&headers)).expect_err("three problems");
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0].starts_with("`http[0].headers.request.set`: `bad name`"),
            "{messages:#?}"
        );
    }
}
