//! `retries`: when a failed attempt is tried again, as Istio configures Envoy.
//!
//! Without a `retries` block Istio still retries: twice, on
//! `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with no
//! status codes listed (so only connection problems and gRPC `UNAVAILABLE` /
//! `CANCELLED`) — [`RetryPolicy::istio_default`]. `attempts: 0` (or a block without
//! `attempts`) disables retries. A block with `attempts` starts from that default and
//! overrides the count, `retryOn` (numbers in it are status codes) and `perTryTimeout`.

use std::time::Duration;

use ambit_api::istio::virtual_service::HttpRetry;
use http::{HeaderMap, StatusCode};

/// Why a retry policy cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(
        "`{field}.retryOn`: `{condition}` is not a retry condition: use 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable or an HTTP status code"
    )]
    Condition { field: String, condition: String },
}

/// Istio's default retry count.
pub const DEFAULT_RETRIES: u32 = 2;
/// Envoy's base interval between retries (`backoff` overrides it); the ceiling is ten
/// times the base.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// Istio's default `retryOn`.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// The upstream answered (with headers).
    Responded {
        status: StatusCode,
        headers: &'a HeaderMap,
    },
    /// No connection could be made.
    ConnectFailure,
    /// The connection or stream ended before a response; `refused` for an HTTP/2
    /// `REFUSED_STREAM`.
    Reset { refused: bool },
    /// `perTryTimeout` expired.
    PerTryTimeout,
}

/// The conditions a retry policy retries on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RetryOn {
    any_5xx: bool,
    gateway_error: bool,
    reset: bool,
    connect_failure: bool,
    retriable_4xx: bool,
    refused_stream: bool,
    /// gRPC status codes (`cancelled` = 1, `unavailable` = 14, …).
    grpc_statuses: Vec<u32>,
    /// Listed with `retriable-status-codes` or as bare numbers.
    status_codes: Vec<u16>,
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff: Duration,
    on: RetryOn,
}

impl RetryPolicy {
    /// Istio's policy for a route without `retries`.
    #[must_use]
    pub fn istio_default() -> Self {
        Self {
            retries: DEFAULT_RETRIES,
            per_try_timeout: None,
            backoff: DEFAULT_BACKOFF,
            on: parse_retry_on("", DEFAULT_RETRY_ON).expect("Istio's default retryOn parses"),
        }
    }

    /// Compiles a route's `retries`; `None` when it disables retries.
    pub fn compile(field: &str, spec: Option<&HttpRetry>) -> Result<Option<Self>, RetryError> {
        let Some(spec) = spec else {
            return Ok(Some(Self::istio_default()));
        };
        let retries = match spec.attempts {
            Some(attempts) if attempts > 0 => attempts.unsigned_abs(),
            _ => return Ok(None),
        };
        let mut policy = Self {
            retries,
            ..Self::istio_default()
        };
        if let Some(retry_on) = spec.retry_on.as_deref().filter(|s| !s.is_empty()) {
            policy.on = parse_retry_on(field, retry_on)?;
        }
        policy.per_try_timeout = spec
            .per_try_timeout
            .map(|d| d.get())
            .filter(|d| !d.is_zero());
        if let Some(backoff) = spec.backoff.map(|d| d.get()).filter(|d| !d.is_zero()) {
            policy.backoff = backoff;
        }
        Ok(Some(policy))
    }

    /// Whether an attempt that ended like this is retried.
    #[must_use]
    pub fn retries_on(&self, attempt: Attempt<'_>) -> bool {
        let on = &self.on;
        let resets = on.any_5xx || on.gateway_error || on.reset;
        match attempt {
            Attempt::ConnectFailure => resets || on.connect_failure,
            Attempt::Reset { refused } => resets || (refused && on.refused_stream),
            Attempt::PerTryTimeout => resets,
            Attempt::Responded { status, headers } => {
                let code = status.as_u16();
                (on.any_5xx && status.is_server_error())
                    || (on.gateway_error && matches!(code, 502..=504))
                    || (on.retriable_4xx && code == 409)
                    || on.status_codes.contains(&code)
                    || grpc_status(headers).is_some_and(|s| on.grpc_statuses.contains(&s))
            }
        }
    }

    /// How long to wait before retry number `retry` (1-based): Envoy's fully jittered
    /// exponential backoff, up to ten times the base interval.
    #[must_use]
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(10);
        let window = self
            .backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(ceiling);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=window_ms))
    }
}

/// A response's `grpc-status`, from its headers or trailers.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn parse_retry_on(field: &str, text: &str) -> Result<RetryOn, RetryError> {
    let mut on = RetryOn::default();
    for condition in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match condition {
            "5xx" => on.any_5xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "refused-stream" => on.refused_stream = true,
            // The codes come with the policy (bare numbers); the flag alone adds none.
            "retriable-status-codes" => {}
            "cancelled" => on.grpc_statuses.push(1),
            "deadline-exceeded" => on.grpc_statuses.push(4),
            "resource-exhausted" => on.grpc_statuses.push(8),
            "internal" => on.grpc_statuses.push(13),
            "unavailable" => on.grpc_statuses.push(14),
            code => match code.parse::<u16>() {
                Ok(status) if (100..=599).contains(&status) => on.status_codes.push(status),
                _ => {
                    return Err(RetryError::Condition {
                        field: field.to_owned(),
                        condition: code.to_owned(),
                    });
                }
            },
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Option<RetryPolicy> {
        let spec: HttpRetry = serde_yaml_ng::from_str(yaml).expect("test retries are YAML");
        RetryPolicy::compile("http[0].retries", Some(&spec)).expect("test retries compile")
    }

    fn responded(status: u16, headers: &HeaderMap) -> Attempt<'_> {
        Attempt::Responded {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
        }
    }

    #[test]
    fn without_retries_istio_retries_connection_problems_twice() {
        let policy = RetryPolicy::compile("r", None)
            .unwrap()
            .expect("a default policy");
        let none = HeaderMap::new();
        assert_eq!(policy.retries, 2);
        assert!(policy.retries_on(Attempt::ConnectFailure));
        assert!(policy.retries_on(Attempt::Reset { refused: true }));
        assert!(!policy.retries_on(Attempt::Reset { refused: false }));
        assert!(
            !policy.retries_on(responded(503, &none)),
            "an application 503 is an answer"
        );
        let mut unavailable = HeaderMap::new();
        unavailable.insert("grpc-status", "14".parse().unwrap());
        assert!(policy.retries_on(responded(200, &unavailable)));
    }

    #[test]
    fn zero_or_missing_attempts_disable_retries() {
        assert_eq!(compile("attempts: 0"), None);
        assert_eq!(compile("retryOn: 5xx"), None);
    }

    #[test]
    fn conditions_and_status_codes() {
        let none = HeaderMap::new();
        let policy =
            compile("{attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,retriable-4xx,418'}")
                .expect("a policy");
        assert_eq!(policy.retries, 3);
        assert_eq!(policy.per_try_timeout, Some(Duration::from_secs(2)));
        assert!(policy.retries_on(responded(503, &none)));
        assert!(
            !policy.retries_on(responded(500, &none)),
            "500 is not a gateway error"
        );
        assert!(policy.retries_on(responded(409, &none)));
        assert!(policy.retries_on(responded(418, &none)));
        assert!(policy.retries_on(Attempt::PerTryTimeout));

        let five_xx = compile("{attempts: 1, retryOn: 5xx}").unwrap();
        assert!(five_xx.retries_on(responded(500, &none)));
        assert!(five_xx.retries_on(Attempt::ConnectFailure));
        assert!(!five_xx.retries_on(responded(404, &none)));

        let connect = compile("{attempts: 1, retryOn: connect-failure}").unwrap();
        assert!(connect.retries_on(Attempt::ConnectFailure));
        assert!(!connect.retries_on(Attempt::Reset { refused: false }));
    }

    #[test]
    fn an_unknown_condition_is_named() {
        let spec: HttpRetry =
            serde_yaml_ng::from_str("{attempts: 1, retryOn: '5xx,sometimes'}").unwrap();
        let error = RetryPolicy::compile("http[2].retries", Some(&spec))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("`http[2].retries.retryOn`: `sometimes` is not"),
            "{error}"
        );
    }

    #[test]
    fn backoff_is_jittered_under_a_growing_ceiling() {
        let policy = RetryPolicy::istio_default();
        for retry in 1..=8 {
            let wait = policy.backoff_before(retry);
            assert!(
                wait <= DEFAULT_BACKOFF * 10,
                "retry {retry} waited {wait:?}"
            );
        }
        assert!(policy.backoff_before(1) <= DEFAULT_BACKOFF);
    }
}
