//! The mesh model: the objects that passed validation, typed, with where they came from.
//!
//! This first slice holds VirtualServices and DestinationRules as read; resolving them
//! against workloads and services comes with the next slices.

use ambit_api::{
    istio::{DestinationRule, DestinationRuleSpec, VirtualService, VirtualServiceSpec},
    manifests::{Object, Source},
};

/// An object that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted<T> {
    pub object: T,
    pub source: Source,
}

/// Every valid Istio object of the input.
#[derive(Debug, Default)]
pub struct Model {
    pub virtual_services: Vec<Accepted<VirtualService>>,
    pub destination_rules: Vec<Accepted<DestinationRule>>,
}

impl Model {
    /// How many objects the model holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.virtual_services.len() + self.destination_rules.len()
    }

    /// Whether the model holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The VirtualService `namespace/name`.
    #[must_use]
    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<&VirtualService> {
        find(&self.virtual_services, namespace, name, |vs| &vs.metadata)
    }

    /// The DestinationRule `namespace/name`.
    #[must_use]
    pub fn destination_rule(&self, namespace: &str, name: &str) -> Option<&DestinationRule> {
        find(&self.destination_rules, namespace, name, |dr| &dr.metadata)
    }

    pub(crate) fn add_virtual_service(&mut self, object: &Object, spec: VirtualServiceSpec) {
        let mut typed = VirtualService::new(&object.metadata.name, spec);
        copy_metadata(object, &mut typed.metadata);
        self.virtual_services.push(Accepted {
            object: typed,
            source: object.source.clone(),
        });
    }

    pub(crate) fn add_destination_rule(&mut self, object: &Object, spec: DestinationRuleSpec) {
        let mut typed = DestinationRule::new(&object.metadata.name, spec);
        copy_metadata(object, &mut typed.metadata);
        self.destination_rules.push(Accepted {
            object: typed,
            source: object.source.clone(),
        });
    }
}

type KubeMeta = kube::core::ObjectMeta;

fn find<'a, T>(
    objects: &'a [Accepted<T>],
    namespace: &str,
    name: &str,
    meta: impl Fn(&T) -> &KubeMeta,
) -> Option<&'a T> {
    objects.iter().map(|a| &a.object).find(|o| {
        let meta = meta(o);
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref() == Some(namespace)
    })
}

/// The manifest's metadata, in Kubernetes' form (the namespace made explicit).
fn copy_metadata(object: &Object, meta: &mut KubeMeta) {
    let source = &object.metadata;
    meta.namespace = Some(object.namespace().to_owned());
    meta.uid.clone_from(&source.uid);
    meta.labels = (!source.labels.is_empty()).then(|| source.labels.clone());
    meta.annotations = (!source.annotations.is_empty()).then(|| source.annotations.clone());
}
