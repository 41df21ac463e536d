//! Trace context: W3C `traceparent` / `tracestate` and B3 (`x-b3-*`, `b3`) pass to the
//! endpoint unchanged; a request without a valid `traceparent` gets a new one (a new
//! trace, or the B3 trace id when the request has one, and a new span id), sampled by the
//! configured share, so the endpoint always sees a valid W3C context. `x-request-id` is
//! added when absent, as Envoy does.

use http::{HeaderMap, HeaderValue};

use crate::table::sampled;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const REQUEST_ID: &str = "x-request-id";
const B3_TRACE_ID: &str = "x-b3-traceid";

/// Adds what is missing of the trace context and request id to a request's headers;
/// returns the request id. `sampling_percent` (0 to 100) is the share of new traces
/// marked sampled.
pub fn prepare(headers: &mut HeaderMap, sampling_percent: f64) -> String {
    let valid = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_valid_traceparent);
    if !valid {
        // An invalid parent voids its state too (W3C Trace Context, §3.3).
        headers.remove(TRACESTATE);
        let trace_id = headers
            .get(B3_TRACE_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(b3_trace_id)
            .unwrap_or_else(|| format!("{:032x}", nonzero(fastrand::u128)));
        let flags = if sampled(sampling_percent) {
            "01"
        } else {
            "00"
        };
        let span_id = nonzero(fastrand::u64);
        let traceparent = format!("00-{trace_id}-{span_id:016x}-{flags}");
        if let Ok(value) = HeaderValue::try_from(traceparent) {
            headers.insert(TRACEPARENT, value);
        }
    }
    if let Some(id) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        return id.to_owned();
    }
    let id = uuid_v4();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    id
}

/// The trace id of a valid version-00 `traceparent`.
#[must_use]
pub fn trace_id(traceparent: &str) -> Option<&str> {
    is_valid_traceparent(traceparent).then(|| &traceparent[3..35])
}

/// `00-<32 hex, not all 0>-<16 hex, not all 0>-<2 hex>` (a later version may append
/// fields after a `-`).
fn is_valid_traceparent(value: &str) -> bool {
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zero = |field: &str| field.bytes().all(|b| b == b'0');
    hex(version, 2)
        && version != "ff"
        && (version != "00" || fields.next().is_none())
        && hex(trace, 32)
        && !zero(trace)
        && hex(span, 16)
        && !zero(span)
        && hex(flags, 2)
}

/// A B3 trace id as a W3C one: 32 lowercase hex digits (a 64-bit id left-padded).
fn b3_trace_id(value: &str) -> Option<String> {
    let value = value.to_ascii_lowercase();
    let hex = value.bytes().all(|b| b.is_ascii_hexdigit()) && !value.bytes().all(|b| b == b'0');
    match value.len() {
        32 if hex => Some(value),
        16 if hex => Some(format!("{value:0>32}")),
        _ => None,
    }
}

/// A random id that is not all zeros (W3C forbids zero trace and span ids).
fn nonzero<T: Default + PartialEq>(random: impl Fn(std::ops::RangeFull) -> T) -> T {
    loop {
        let id = random(..);
        if id != T::default() {
            return id;
        }
    }
}

/// A random (version 4) UUID, as Envoy's request ids are.
fn uuid_v4() -> String {
    let bits = fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62) | (0x4 << 76) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        bits >> 96,
        (bits >> 80) & 0xffff,
        (bits >> 64) & 0xffff,
        (bits >> 48) & 0xffff,
        bits & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_context_gets_a_valid_sampled_traceparent_and_a_request_id() {
        let mut headers = HeaderMap::new();
        let id = prepare(&mut headers, 100.0);
        let traceparent = headers[TRACEPARENT].to_str().unwrap().to_owned();
        assert!(
            is_valid_traceparent(&traceparent),
            "`{traceparent}` is a valid traceparent"
        );
        assert!(
            traceparent.ends_with("-01"),
            "sampled by default: `{traceparent}`"
        );
        assert_eq!(headers[REQUEST_ID], id.as_str());
        assert_eq!(id.len(), 36, "a UUID: `{id}`");
        assert_eq!(&id[14..15], "4", "version 4: `{id}`");
        prepare(&mut headers, 0.0);
        assert_eq!(
            headers[TRACEPARENT],
            traceparent.as_str(),
            "a valid context is kept"
        );
    }

    #[test]
    fn an_existing_context_and_request_id_pass_unchanged() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(parent));
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(prepare(&mut headers, 100.0), "abc");
        assert_eq!(headers[TRACEPARENT], parent);
        assert_eq!(headers[TRACESTATE], "congo=t61rcWkgMzE");
    }

    #[test]
    fn an_invalid_context_is_replaced_and_a_b3_trace_keeps_its_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        headers.insert(TRACESTATE, HeaderValue::from_static("a=b"));
        headers.insert(B3_TRACE_ID, HeaderValue::from_static("80f198ee56343ba8"));
        prepare(&mut headers, 0.0);
        let traceparent = headers[TRACEPARENT].to_str().unwrap();
        assert_eq!(
            trace_id(traceparent),
            Some("000000000000000080f198ee56343ba8"),
            "`{traceparent}`"
        );
        assert!(
            traceparent.ends_with("-00"),
            "not sampled at 0%: `{traceparent}`"
        );
        assert!(
            headers.get(TRACESTATE).is_none(),
            "the invalid parent's state is dropped"
        );
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(!is_valid_traceparent(bad), "`{bad}` is invalid");
        }
    }
}
