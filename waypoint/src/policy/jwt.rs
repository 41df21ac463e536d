//! `RequestAuthentication`: JSON Web Tokens verified against each issuer's key set.
//!
//! As in Istio (Envoy's `jwt_authn` with `allow_missing`): a request without a token
//! passes, and policy decides whether one was needed (`requestPrincipals: ["*"]`); a
//! request with a token is refused with 401 unless the token verifies against the rule
//! of its issuer (`iss`): signature by a key of the rule's `jwks` (by `kid` when the
//! token names one), `exp` and `nbf` within 60 seconds of clock skew, and `aud` among the
//! rule's `audiences` when it has any. Tokens are read from the rule's `fromHeaders`
//! (after the prefix), `fromParams` and `fromCookies`, by default (none named) from
//! `Authorization: Bearer` and the `access_token` parameter; the first token found is
//! the one checked. A verified token's header is removed from the forwarded request
//! unless `forwardOriginalToken`; its payload is copied (base64url) into
//! `outputPayloadToHeader`, and each claim of `outputClaimToHeaders` (a string, boolean
//! or integer; `a.b` for a nested one) into its header, where routes can match it.
//! Those output headers are cleared from every request the rule covers first, so a
//! client cannot forge them.

use ambit_api::istio::{
    RequestAuthenticationSpec,
    request_authentication::{ClaimToHeader, JwtHeader, JwtRule},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind, jwk::AlgorithmParameters};
use serde_json::{Map, Value};

use super::{
    Attachment, Coverage, PolicyError, config_error,
    jwks::{Fetcher, Source},
};
use crate::{
    config::{Config, Named},
    table::ConfigError,
};

/// Envoy's default clock skew for `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The query parameter read when a rule names no token location.
const DEFAULT_PARAM: &str = "access_token";

/// The RequestAuthentication rules that target this waypoint.
#[derive(Debug, Default)]
pub struct Authentication {
    rules: Vec<IssuerRule>,
}

/// One `jwtRules` entry, compiled.
#[derive(Debug)]
struct IssuerRule {
    coverage: Coverage,
    issuer: String,
    audiences: Vec<String>,
    keys: Source,
    locations: Vec<Location>,
    forward: bool,
    output_payload: Option<HeaderName>,
    /// `outputClaimToHeaders`: each header and the claim path it gets.
    output_claims: Vec<(HeaderName, Vec<String>)>,
}

/// Where a token is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// A verified token: its principal (`iss/sub`) and its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub principal: String,
    payload: Map<String, Value>,
}

/// Why a token was refused, with Envoy's words for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtFailure {
    BadFormat,
    UnknownIssuer,
    Expired,
    NotYetValid,
    Audience,
    Verification,
}

impl JwtFailure {
    /// The body of the 401, as Envoy's `jwt_authn` words it.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Self::UnknownIssuer => "Jwt issuer is not configured",
            Self::Expired => "Jwt is expired",
            Self::NotYetValid => "Jwt not yet valid",
            Self::Audience => "Audiences in Jwt are not allowed",
            Self::Verification => "Jwt verification fails",
        }
    }
}

impl Claims {
    /// The string values at a claim path (`["groups"]`, `["realm", "role"]`): a string,
    /// or each string of a list; nothing for a missing claim or other types.
    #[must_use]
    pub fn values(&self, path: &[impl AsRef<str>]) -> Vec<&str> {
        match self.at(path) {
            Some(Value::String(text)) => vec![text.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The claim at `path` as a header value, as Envoy copies one: a string, boolean
    /// or integer; nothing for a missing claim or other types.
    fn header_value(&self, path: &[String]) -> Option<HeaderValue> {
        match self.at(path)? {
            Value::String(text) => HeaderValue::from_str(text).ok(),
            Value::Bool(flag) => Some(HeaderValue::from_static(if *flag {
                "true"
            } else {
                "false"
            })),
            Value::Number(number) => number.as_i64().map(HeaderValue::from),
            _ => None,
        }
    }

    /// The claim at `path`: a top-level claim, then a field of it, and so on.
    fn at(&self, path: &[impl AsRef<str>]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(self.payload.get(first.as_ref())?, |value, name| {
                value.get(name.as_ref())
            })
    }
}

impl Authentication {
    /// Compiles the RequestAuthentications of `config` that target this waypoint.
    pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Self {
        let mut rules = Vec::new();
        for named in &config.request_authentications {
            let spec = &named.spec;
            let Some(coverage) = Coverage::of(
                config,
                &named.namespace,
                Attachment {
                    selector: spec.selector.as_ref(),
                    target_ref: spec.target_ref.as_ref(),
                    target_refs: &spec.target_refs,
                },
            ) else {
                continue;
            };
            match compile_object(named, &coverage) {
                Ok(compiled) => rules.extend(compiled),
                Err(problems) => errors.extend(
                    problems
                        .into_iter()
                        .map(|p| config_error("RequestAuthentication", named.key(), p)),
                ),
            }
        }
        Self { rules }
    }

    /// Finds and verifies the request's token, if it has one, for a request to
    /// `service`. `Ok(None)`: no token.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        service: Option<&str>,
        fetcher: &Fetcher,
    ) -> Result<Option<Claims>, JwtFailure> {
        let rules: Vec<&IssuerRule> = self
            .rules
            .iter()
            .filter(|r| r.coverage.covers(service))
            .collect();
        // Only a verified token may fill an output header; a client's own is dropped.
        for name in rules.iter().flat_map(|r| r.output_headers()) {
            headers.remove(name);
        }
        let Some((location, token)) = rules
            .iter()
            .flat_map(|rule| &rule.locations)
            .find_map(|location| Some((location, location.token(headers, query)?)))
        else {
            return Ok(None);
        };
        let issuer = peek_issuer(&token)?;
        let rule = rules
            .iter()
            .find(|rule| rule.issuer == issuer)
            .ok_or(JwtFailure::UnknownIssuer)?;
        let claims = rule.verify(&token, fetcher).await?;
        if !rule.forward
            && let Location::Header { name, .. } = location
        {
            headers.remove(name);
        }
        if let Some(name) = &rule.output_payload
            && let Some(payload) = token.split('.').nth(1)
            && let Ok(value) = HeaderValue::from_str(payload)
        {
            headers.insert(name.clone(), value);
        }
        for (name, path) in &rule.output_claims {
            if let Some(value) = claims.header_value(path) {
                headers.insert(name.clone(), value);
            }
        }
        Ok(Some(claims))
    }
}

fn compile_object(
    named: &Named<RequestAuthenticationSpec>,
    coverage: &Coverage,
) -> Result<Vec<IssuerRule>, Vec<PolicyError>> {
    let mut problems = Vec::new();
    let rules: Vec<IssuerRule> = named
        .spec
        .jwt_rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            IssuerRule::compile(&format!("jwtRules[{i}]"), rule, coverage.clone())
                .map_err(|p| problems.extend(p))
                .ok()
        })
        .collect();
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

impl IssuerRule {
    fn compile(field: &str, rule: &JwtRule, coverage: Coverage) -> Result<Self, Vec<PolicyError>> {
        let mut problems = Vec::new();
        if rule.issuer.is_empty() {
            problems.push(PolicyError::NoIssuer {
                field: field.to_owned(),
            });
        }
        let keys = Source::compile(field, rule)
            .map_err(|e| problems.push(e))
            .ok();
        let header_name = |name: &str, problems: &mut Vec<PolicyError>| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| {
                    problems.push(PolicyError::HeaderName {
                        field: field.to_owned(),
                        name: name.to_owned(),
                    });
                })
                .ok()
        };
        let mut locations: Vec<Location> = rule
            .from_headers
            .iter()
            .filter_map(|JwtHeader { name, prefix }| {
                Some(Location::Header {
                    name: header_name(name, &mut problems)?,
                    prefix: prefix.clone(),
                })
            })
            .chain(rule.from_params.iter().cloned().map(Location::Param))
            .chain(rule.from_cookies.iter().cloned().map(Location::Cookie))
            .collect();
        if locations.is_empty() {
            locations = vec![
                Location::Header {
                    name: header::AUTHORIZATION,
                    prefix: "Bearer ".to_owned(),
                },
                Location::Param(DEFAULT_PARAM.to_owned()),
            ];
        }
        let output_payload = Some(rule.output_payload_to_header.as_str())
            .filter(|name| !name.is_empty())
            .and_then(|name| header_name(name, &mut problems));
        let output_claims = rule
            .output_claim_to_headers
            .iter()
            .filter_map(|ClaimToHeader { header, claim }| {
                let name = header_name(header, &mut problems)?;
                if claim.is_empty() {
                    problems.push(PolicyError::NoClaim {
                        field: format!("{field}.outputClaimToHeaders"),
                        header: header.clone(),
                    });
                    return None;
                }
                Some((name, claim.split('.').map(str::to_owned).collect()))
            })
            .collect();
        let Some(keys) = keys.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        Ok(Self {
            coverage,
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            keys,
            locations,
            forward: rule.forward_original_token,
            output_payload,
            output_claims,
        })
    }

    /// The headers a verified token fills.
    fn output_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.output_payload
            .iter()
            .chain(self.output_claims.iter().map(|(name, _)| name))
    }

    /// Verifies `token` with the rule's keys: those with the token's `kid` (all, when it
    /// names none) and a type that suits its `alg`.
    async fn verify(&self, token: &str, fetcher: &Fetcher) -> Result<Claims, JwtFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtFailure::BadFormat)?;
        let keys = self
            .keys
            .keys(fetcher)
            .await
            .ok_or(JwtFailure::Verification)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        if self.audiences.is_empty() {
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
        } else {
            validation.set_audience(&self.audiences);
            validation.set_required_spec_claims(&["aud"]);
        }
        let candidates = keys.iter().filter(|key| {
            header
                .kid
                .as_ref()
                .is_none_or(|kid| key.id.as_ref().is_none_or(|id| id == kid))
                && suits(&key.params, header.alg)
        });
        let mut failure = JwtFailure::Verification;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return claims(&self.issuer, data.claims),
                Err(error) => match error.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {}
                    ErrorKind::ExpiredSignature => return Err(JwtFailure::Expired),
                    ErrorKind::ImmatureSignature => return Err(JwtFailure::NotYetValid),
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
                        return Err(JwtFailure::Audience);
                    }
                    _ => failure = JwtFailure::Verification,
                },
            }
        }
        Err(failure)
    }
}

/// The verified claims; `exp` and `nbf` must be numbers when present (a library that
/// skips a claim it cannot read would otherwise accept `"exp": "never"`).
fn claims(issuer: &str, payload: Map<String, Value>) -> Result<Claims, JwtFailure> {
    if ["exp", "nbf"]
        .iter()
        .any(|name| payload.get(*name).is_some_and(|v| !v.is_number()))
    {
        return Err(JwtFailure::Verification);
    }
    let subject = payload
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(Claims {
        principal: format!("{issuer}/{subject}"),
        payload,
    })
}

/// Whether a key of this type can check a signature made with `alg`.
fn suits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    use Algorithm::{
        ES256, ES384, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512,
    };
    match params {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        AlgorithmParameters::OctetKey(_) => matches!(alg, HS256 | HS384 | HS512),
    }
}

/// The token's `iss`, read before verification to choose the rule.
fn peek_issuer(token: &str) -> Result<String, JwtFailure> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtFailure::BadFormat);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtFailure::BadFormat)?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtFailure::BadFormat)?;
    payload
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(JwtFailure::UnknownIssuer)
}

impl Location {
    /// The token this location carries in the request, if any.
    fn token(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        match self {
            Self::Header { name, prefix } => {
                let value = headers.get(name)?.to_str().ok()?;
                let token = if prefix.is_empty() {
                    value
                } else if value.len() >= prefix.len()
                    && value[..prefix.len()].eq_ignore_ascii_case(prefix)
                {
                    &value[prefix.len()..]
                } else {
                    return None;
                };
                Some(token.trim().to_owned()).filter(|t| !t.is_empty())
            }
            Self::Param(param) => query?
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name == param)
                .map(|(_, value)| value.to_owned())
                .filter(|t| !t.is_empty()),
            Self::Cookie(cookie) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name == cookie)
                .map(|(_, value)| value.trim_matches('"').to_owned())
                .filter(|t| !t.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests;
