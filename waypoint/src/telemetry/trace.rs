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
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const B3_SINGLE: &str = "b3";

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

/// The ids of the waypoint's own span of a sampled request (see [`open_span`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: String,
    pub id: String,
    /// The client's span, when the request arrived with one.
    pub parent: Option<String>,
}

/// Whether the request arrived with a valid `traceparent` (call before [`prepare`]).
#[must_use]
pub fn arrived_with_context(headers: &HeaderMap) -> bool {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_valid_traceparent)
}

/// The waypoint's span of a request [`prepare`]d, if its trace is sampled: a trace the
/// waypoint started has its span id already in `traceparent`; a client's gets a child
/// span, whose id replaces the client's in the `traceparent` (and B3 headers) sent on,
/// so the endpoint's spans hang under the waypoint's, as under Envoy's.
pub fn open_span(headers: &mut HeaderMap, arrived_with_context: bool) -> Option<SpanIds> {
    let traceparent = headers.get(TRACEPARENT)?.to_str().ok()?;
    let (trace_id, span_id, flags) = (
        trace_id(traceparent)?.to_owned(),
        &traceparent[36..52],
        &traceparent[53..55],
    );
    let sampled = u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1);
    if !sampled {
        return None;
    }
    if !arrived_with_context {
        return Some(SpanIds {
            trace_id,
            id: span_id.to_owned(),
            parent: None,
        });
    }
    let parent = Some(span_id.to_owned());
    let id = format!("{:016x}", nonzero(fastrand::u64));
    let child = format!("00-{trace_id}-{id}-{flags}");
    if let Ok(value) = HeaderValue::try_from(child) {
        headers.insert(TRACEPARENT, value);
    }
    reparent_b3(headers, &id);
    Some(SpanIds {
        trace_id,
        id,
        parent,
    })
}

/// Makes `span` the current span of the request's B3 headers, if it has them, and
/// their span its parent.
fn reparent_b3(headers: &mut HeaderMap, span: &str) {
    let Ok(span) = HeaderValue::from_str(span) else {
        return;
    };
    if let Some(parent) = headers.get(B3_SPAN_ID).cloned() {
        headers.insert(B3_SPAN_ID, span.clone());
        headers.insert(B3_PARENT_SPAN_ID, parent);
    }
    // `b3: {trace}-{span}[-{sampled}[-{parent}]]`.
    let single = headers.get(B3_SINGLE).and_then(|v| v.to_str().ok());
    let Some((trace, rest)) = single.and_then(|v| v.split_once('-')) else {
        return;
    };
    let mut fields = rest.split('-');
    let (Some(parent), sampled) = (fields.next(), fields.next()) else {
        return;
    };
    let span = span.to_str().unwrap_or_default();
    let value = match sampled {
        Some(sampled) => format!("{trace}-{span}-{sampled}-{parent}"),
        None => format!("{trace}-{span}-1-{parent}"),
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(B3_SINGLE, value);
    }
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
    fn a_sampled_request_gets_a_span_of_its_own_under_the_clients() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(parent));
        headers.insert(
            B3_SINGLE,
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        );
        let span = open_span(&mut headers, true).expect("sampled");
        assert_eq!(
            headers[B3_SINGLE],
            format!(
                "4bf92f3577b34da6a3ce929d0e0e4736-{}-1-00f067aa0ba902b7",
                span.id
            )
            .as_str(),
            "b3 names the waypoint's span and the client's as its parent"
        );
        assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.parent.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(
            headers[TRACEPARENT],
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span.id).as_str(),
            "the endpoint's parent is the waypoint's span"
        );

        let mut started = HeaderMap::new();
        prepare(&mut started, 100.0);
        let sent = started[TRACEPARENT].to_str().unwrap().to_owned();
        let root = open_span(&mut started, false).expect("sampled");
        assert_eq!((root.parent, &sent[36..52]), (None, root.id.as_str()));
        assert_eq!(
            started[TRACEPARENT],
            sent.as_str(),
            "its own context goes on"
        );

        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(unsampled));
        assert_eq!(open_span(&mut headers, true), None);
        assert_eq!(headers[TRACEPARENT], unsampled, "passes unchanged");
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
