//! Envoy's response flags, which Istio's access logs and metrics carry: why a
//! response is what it is when the upstream did not simply answer.

use std::fmt;

/// A set of response flags (`UH`, `UF`, …), shown comma-separated like Envoy's
/// `%RESPONSE_FLAGS%`, or `-` when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// `UH`: the chosen destination has no endpoints.
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1);
    /// `UF`: connecting to the endpoint failed.
    pub const UPSTREAM_CONNECT_FAILURE: Self = Self(1 << 1);
    /// `UT`: the route's timeout expired.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    /// `UC`: the upstream connection ended before a response.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 3);
    /// `URX`: retries were exhausted and the last attempt's answer was returned.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 4);
    /// `DI`: a fault delay was injected.
    pub const DELAY_INJECTED: Self = Self(1 << 5);
    /// `FI`: a fault abort was injected.
    pub const FAULT_INJECTED: Self = Self(1 << 6);
    /// `NR`: no route matched the request.
    pub const NO_ROUTE_FOUND: Self = Self(1 << 7);
    /// `NC`: the route names a destination (host, subset or port) that does not exist.
    pub const NO_CLUSTER_FOUND: Self = Self(1 << 8);
    /// `DC`: the downstream connection ended before the response was sent.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 9);
    /// `UO`: a `connectionPool` limit refused the request (circuit breaking).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 10);
    /// `DT`: a relayed connection reached `connectionPool.tcp.maxConnectionDuration`.
    pub const DURATION_TIMEOUT: Self = Self(1 << 11);
    /// `UAEX`: an external authorizer (a CUSTOM policy's) refused the request.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self(1 << 12);

    const CODES: [(Self, &'static str); 13] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_CONNECT_FAILURE, "UF"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::NO_CLUSTER_FOUND, "NC"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::DURATION_TIMEOUT, "DT"),
        (Self::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
    ];

    /// Whether every flag in `other` is set.
    #[must_use]
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Whether no flag is set.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The code of the first flag set (`UH`), `-` when none: the label of a relayed
    /// TCP connection, which fails in one way at most.
    #[must_use]
    pub fn first_code(self) -> &'static str {
        Self::CODES
            .iter()
            .find(|(flag, _)| self.contains(*flag))
            .map_or("-", |(_, code)| code)
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut codes = Self::CODES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, code)| *code);
        if let Some(first) = codes.next() {
            f.write_str(first)?;
        }
        codes.try_for_each(|code| write!(f, ",{code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_envoys_response_flags() {
        assert_eq!(ResponseFlags::default().to_string(), "-");
        let flags = ResponseFlags::DELAY_INJECTED | ResponseFlags::UPSTREAM_REQUEST_TIMEOUT;
        assert_eq!(flags.to_string(), "UT,DI");
        assert!(flags.contains(ResponseFlags::DELAY_INJECTED));
        assert!(!flags.contains(ResponseFlags::NO_ROUTE_FOUND));
        assert_eq!(ResponseFlags::UPSTREAM_CONNECT_FAILURE.first_code(), "UF");
        assert_eq!(ResponseFlags::default().first_code(), "-");
    }
}
