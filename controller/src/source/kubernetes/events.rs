//! Rejections written where a user looks: a `Warning` Event (`events.k8s.io/v1`, reason
//! [`REASON`]) about each object the model rejects, so `kubectl describe` and
//! `kubectl get events` say what `serve` logs — the object, the field path, the reason
//! and what to do.
//!
//! One Event per object and message: a relist, a resync, or a rebuild for another
//! object's sake writes nothing new; a different problem, the same one again after the
//! object was valid, or a recreated object (a new `uid`) writes a new one. Events are
//! written by a task of their own: a slow or refused write is logged, not retried, and
//! never holds up the model.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ambit_api::manifests::Object;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::mpsc;

use super::store::Store;
use crate::validate::{Diagnostic, Severity};

/// The Events' `reason`.
pub const REASON: &str = "InvalidConfig";
/// The Events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "ambit-controller";
/// The Events' `action`: what the controller did with the object.
pub const ACTION: &str = "Reject";
/// The longest note the API server accepts.
const NOTE_MAX_BYTES: usize = 1024;
/// The longest part of an Event's name taken from the object's, leaving room for the
/// `.<timestamp>` suffix within a name's 253 characters.
const NAME_PREFIX_MAX_CHARS: usize = 200;
/// Where the controller's pod name is: in a pod, the host name is the pod's name.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// Why one object is rejected, as its Event says it.
#[derive(Debug, Clone, PartialEq)]
struct Rejection {
    regarding: ObjectReference,
    note: String,
}

impl Rejection {
    /// Whether `other` says the same about the same object, whatever its
    /// `resourceVersion`.
    fn says_the_same_as(&self, other: &Self) -> bool {
        self.regarding.uid == other.regarding.uid && self.note == other.note
    }
}

/// The rejections an Event was written about, and the task writing new ones.
#[derive(Debug)]
pub struct RejectionEvents {
    /// What is rejected now, by the object's file.
    written: BTreeMap<PathBuf, Rejection>,
    writer: mpsc::UnboundedSender<Rejection>,
}

impl RejectionEvents {
    /// Starts the task writing Events through `client`, reported as coming from this
    /// host (the controller's pod). It ends when this is dropped.
    #[must_use]
    pub fn start(client: Client) -> Self {
        let instance = std::fs::read_to_string(HOSTNAME_FILE)
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| REPORTING_CONTROLLER.to_owned());
        let (writer, rejections) = mpsc::unbounded_channel();
        tokio::spawn(write_events(client, instance, rejections));
        Self {
            written: BTreeMap::new(),
            writer,
        }
    }

    /// Writes an Event about each object of `store` that `diagnostics` reject, unless
    /// the last one written about it says the same; forgets the objects no longer
    /// rejected.
    pub fn report(&mut self, store: &Store, diagnostics: &[Diagnostic]) {
        let now = rejections(store, diagnostics);
        for rejection in changed(&self.written, &now) {
            // The writer ends only when this is dropped.
            let _ = self.writer.send(rejection.clone());
        }
        self.written = now;
    }
}

/// The rejections of `now` that `before` does not say already.
fn changed<'a>(
    before: &BTreeMap<PathBuf, Rejection>,
    now: &'a BTreeMap<PathBuf, Rejection>,
) -> impl Iterator<Item = &'a Rejection> {
    now.iter()
        .filter(|(file, rejection)| {
            before
                .get(*file)
                .is_none_or(|written| !written.says_the_same_as(rejection))
        })
        .map(|(_, rejection)| rejection)
}

/// Every object of `store` with an error in `diagnostics`, and what its Event says.
fn rejections(store: &Store, diagnostics: &[Diagnostic]) -> BTreeMap<PathBuf, Rejection> {
    let mut errors: BTreeMap<&Path, Vec<&Diagnostic>> = BTreeMap::new();
    for diagnostic in diagnostics {
        if diagnostic.severity == Severity::Error {
            errors.entry(&diagnostic.file).or_default().push(diagnostic);
        }
    }
    errors
        .into_iter()
        .filter_map(|(file, errors)| {
            let (object, resource_version) = store.object(file)?;
            let rejection = Rejection {
                regarding: reference(object, resource_version),
                note: note(object, &errors),
            };
            Some((file.to_owned(), rejection))
        })
        .collect()
}

fn reference(object: &Object, resource_version: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some(object.api_version.clone()),
        kind: Some(object.kind.clone()),
        namespace: object.metadata.namespace.clone(),
        name: Some(object.metadata.name.clone()),
        uid: object.metadata.uid.clone(),
        resource_version: resource_version.map(str::to_owned),
        field_path: None,
    }
}

/// `shop/cart (VirtualService) rejected: spec.http[0].route: weights sum to 90, …; …`,
/// cut to what the API server accepts.
fn note(object: &Object, errors: &[&Diagnostic]) -> String {
    let problems: Vec<String> = errors
        .iter()
        .map(|error| {
            if error.path.is_empty() {
                error.reason.to_string()
            } else {
                format!("{}: {}", error.path, error.reason)
            }
        })
        .collect();
    let note = format!(
        "{}/{} ({}) rejected: {}",
        object.namespace(),
        object.metadata.name,
        object.kind,
        problems.join("; ")
    );
    cut(note, NOTE_MAX_BYTES)
}

/// `text`, ending in `…` within `max_bytes` if it is longer.
fn cut(mut text: String, max_bytes: usize) -> String {
    const ELLIPSIS: char = '…';
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes - ELLIPSIS.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(ELLIPSIS);
    text
}

/// The Event saying `rejection`, written at `now` by `instance`.
fn event(rejection: &Rejection, instance: &str, now: Timestamp) -> Event {
    let object_name = rejection.regarding.name.as_deref().unwrap_or_default();
    let prefix: String = object_name.chars().take(NAME_PREFIX_MAX_CHARS).collect();
    let prefix = prefix.trim_end_matches(['.', '-']);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
            namespace: Some(events_namespace(rejection).to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".to_owned()),
        reason: Some(REASON.to_owned()),
        action: Some(ACTION.to_owned()),
        note: Some(rejection.note.clone()),
        regarding: Some(rejection.regarding.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    }
}

/// The object's namespace; `default` for a cluster-scoped object, as Kubernetes does.
fn events_namespace(rejection: &Rejection) -> &str {
    rejection
        .regarding
        .namespace
        .as_deref()
        .unwrap_or("default")
}

/// Writes an Event for each rejection received, until the sender is dropped.
async fn write_events(
    client: Client,
    instance: String,
    mut rejections: mpsc::UnboundedReceiver<Rejection>,
) {
    while let Some(rejection) = rejections.recv().await {
        let namespace = events_namespace(&rejection);
        let object = rejection.regarding.name.as_deref().unwrap_or_default();
        let events = Api::<Event>::namespaced(client.clone(), namespace);
        let event = event(&rejection, &instance, Timestamp::now());
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => tracing::debug!(namespace, object, "Event written about a rejected object"),
            Err(error) => tracing::warn!(
                namespace,
                object,
                %error,
                "cannot write the Event about a rejected object (the rejection is logged above) — may the controller's service account create events.events.k8s.io in this namespace?"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use ambit_api::manifests::Source;

    use super::*;
    use crate::{
        source::kubernetes::store::{Served, Update},
        validate::{ObjectRef, Reason},
    };

    const FILE: &str = "kube://networking.istio.io/VirtualService/shop/cart";

    fn store(uid: &str, resource_version: &str) -> Store {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: cart, namespace: shop, uid: {uid}}}\nspec: {{hosts: [cart]}}\n"
        );
        let value = serde_yaml_ng::from_str(&text).expect("a VirtualService");
        let source = Source {
            file: PathBuf::from(FILE),
            document: 1,
        };
        let object = Object::from_value(value, source).expect("an object");
        let mut store = Store::default();
        store.apply([Update::Apply(Box::new(Served {
            object,
            resource_version: Some(resource_version.to_owned()),
        }))]);
        store
    }

    fn error(path: &str, reason: Reason) -> Diagnostic {
        Diagnostic {
            severity: reason.severity(),
            object: Some(ObjectRef {
                group: "networking.istio.io".into(),
                kind: "VirtualService".into(),
                namespace: "shop".into(),
                name: "cart".into(),
            }),
            file: PathBuf::from(FILE),
            document: Some(1),
            path: path.to_owned(),
            reason,
        }
    }

    #[test]
    fn an_object_with_errors_gets_one_note_naming_it_and_each_error() {
        let diagnostics = [
            error("spec.http[0].route", Reason::WeightSum(90)),
            error("spec.http[0]", Reason::Deprecated("`route`")),
            error(
                "spec.http[1].retries.retryOn",
                Reason::RetryOn("sometimes".into()),
            ),
        ];
        let found = rejections(&store("u1", "7"), &diagnostics);
        let rejection = &found[Path::new(FILE)];
        assert_eq!(
            rejection.note,
            "shop/cart (VirtualService) rejected: spec.http[0].route: weights sum to 90, they must sum to 100; spec.http[1].retries.retryOn: unknown retry condition `sometimes`: use 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, or an HTTP status code",
            "errors only, each with its field path"
        );
        assert_eq!(
            rejection.regarding,
            ObjectReference {
                api_version: Some("networking.istio.io/v1".into()),
                kind: Some("VirtualService".into()),
                namespace: Some("shop".into()),
                name: Some("cart".into()),
                uid: Some("u1".into()),
                resource_version: Some("7".into()),
                field_path: None,
            }
        );
        let warnings_only = rejections(
            &store("u1", "7"),
            &[error("spec.http[0]", Reason::Deprecated("`route`"))],
        );
        assert!(warnings_only.is_empty(), "{warnings_only:?}");
    }

    #[test]
    fn only_a_new_message_or_a_new_object_is_written_again() {
        let weights = [error("spec.http[0].route", Reason::WeightSum(90))];
        let first = rejections(&store("u1", "7"), &weights);
        assert_eq!(changed(&BTreeMap::new(), &first).count(), 1);
        let resynced = rejections(&store("u1", "8"), &weights);
        assert_eq!(
            changed(&first, &resynced).count(),
            0,
            "a new resourceVersion alone"
        );
        let recreated = rejections(&store("u2", "9"), &weights);
        assert_eq!(changed(&resynced, &recreated).count(), 1, "a new uid");
        let other = rejections(
            &store("u2", "9"),
            &[error("spec.hosts", Reason::Negative(-1))],
        );
        assert_eq!(changed(&recreated, &other).count(), 1, "a new message");
    }

    #[test]
    fn long_notes_and_names_are_cut_to_what_the_api_accepts() {
        let long = "é".repeat(NOTE_MAX_BYTES);
        let cut_note = cut(long, NOTE_MAX_BYTES);
        assert!(cut_note.len() <= NOTE_MAX_BYTES, "{}", cut_note.len());
        assert!(cut_note.ends_with('…'), "{cut_note}");

        let rejection = Rejection {
            regarding: ObjectReference {
                name: Some(format!("{}-x", "a".repeat(NAME_PREFIX_MAX_CHARS - 1))),
                ..ObjectReference::default()
            },
            note: "n".into(),
        };
        let now = Timestamp::from_second(1_700_000_000).expect("a time");
        let event = event(&rejection, "ambit-controller-0", now);
        let name = event.metadata.name.expect("a name");
        assert!(
            name.len() <= 253 && name.starts_with(&"a".repeat(NAME_PREFIX_MAX_CHARS - 1)),
            "{name}"
        );
        assert!(!name.contains("-."), "a valid DNS subdomain: {name}");
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
    }
}
