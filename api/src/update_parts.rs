//! A large `ConfigUpdate` travels in parts.
//!
//! A gRPC decoder keeps a receive buffer as large as the largest message it was sent,
//! for the life of the stream: a full state of 1,000 workloads (about 0.5 MB) sent as one
//! message would stay in every subscriber's memory for good, beside the state itself. So
//! the controller [`split`]s an update into parts of at most [`MAX_PART_BYTES`] each
//! (`more` set on all but the last, each with the update's `version` and `full`), and the
//! subscriber's [`Assembler`] puts them back together before applying them as one.

use prost::encoding::{message, string};

use crate::config::ConfigUpdate;

/// About the most bytes one part's resources and removed keys take on the wire (a single
/// resource larger than this travels alone in its part).
pub const MAX_PART_BYTES: usize = 32 * 1024;

/// `ConfigUpdate`'s field numbers, for the size of each element on the wire.
const UPSERTED_FIELD: u32 = 3;
const REMOVED_FIELD: u32 = 4;

/// Splits `update` into parts of at most `max_bytes` of resources and removed keys each,
/// in order (resources first, then removed keys). An update that fits is one part.
#[must_use]
pub fn split(update: ConfigUpdate, max_bytes: usize) -> Vec<ConfigUpdate> {
    let ConfigUpdate {
        version,
        full,
        upserted,
        removed,
        more: _,
    } = update;
    let mut parts = Parts {
        parts: Vec::new(),
        bytes: 0,
        max_bytes,
        version,
        full,
    };
    for resource in upserted {
        let len = message::encoded_len(UPSERTED_FIELD, &resource);
        parts.with_room(len).upserted.push(resource);
    }
    for key in removed {
        let len = string::encoded_len(REMOVED_FIELD, &key);
        parts.with_room(len).removed.push(key);
    }
    let mut parts = parts.parts;
    match parts.last_mut() {
        Some(last) => last.more = false,
        None => parts.push(ConfigUpdate {
            version,
            full,
            ..ConfigUpdate::default()
        }),
    }
    parts
}

/// The parts made so far, and how full the last one is.
struct Parts {
    parts: Vec<ConfigUpdate>,
    bytes: usize,
    max_bytes: usize,
    version: u64,
    full: bool,
}

impl Parts {
    /// The part to put `len` more bytes in: the last one, or a new one when they would
    /// not fit (an empty part takes anything).
    fn with_room(&mut self, len: usize) -> &mut ConfigUpdate {
        if self.parts.is_empty() || (self.bytes > 0 && self.bytes + len > self.max_bytes) {
            self.parts.push(ConfigUpdate {
                version: self.version,
                full: self.full,
                more: true,
                ..ConfigUpdate::default()
            });
            self.bytes = 0;
        }
        self.bytes += len;
        self.parts
            .last_mut()
            .expect("a part was just pushed if there was none")
    }
}

/// A part that does not continue the update being assembled.
#[derive(Debug, thiserror::Error)]
#[error(
    "the controller sent a part of version {got} (full: {got_full}) while version {pending} (full: {pending_full}) was incomplete"
)]
pub struct PartMismatch {
    pub pending: u64,
    pub pending_full: bool,
    pub got: u64,
    pub got_full: bool,
}

/// Puts parts back together, in the order they arrive.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<ConfigUpdate>,
}

impl Assembler {
    /// Adds `part`; the whole update once its last part is in, `None` while more are
    /// due.
    ///
    /// # Errors
    /// [`PartMismatch`] when `part` belongs to another update than the parts before it
    /// (they are dropped: the stream cannot be trusted to be in step any more).
    pub fn add(&mut self, part: ConfigUpdate) -> Result<Option<ConfigUpdate>, PartMismatch> {
        let whole = match self.pending.take() {
            None => part,
            Some(mut pending) => {
                if (pending.version, pending.full) != (part.version, part.full) {
                    return Err(PartMismatch {
                        pending: pending.version,
                        pending_full: pending.full,
                        got: part.version,
                        got_full: part.full,
                    });
                }
                pending.upserted.extend(part.upserted);
                pending.removed.extend(part.removed);
                pending.more = part.more;
                pending
            }
        };
        if whole.more {
            self.pending = Some(whole);
            return Ok(None);
        }
        Ok(Some(whole))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::config::{PeerIdentity, resource::Kind};

    fn peer(name: &str, labels: usize) -> crate::config::Resource {
        crate::config::Resource {
            key: format!("peer/shop/{name}"),
            kind: Some(Kind::Peer(PeerIdentity {
                namespace: "shop".to_owned(),
                name: name.to_owned(),
                identity: format!("spiffe://cluster.local/ns/shop/sa/{name}"),
                labels: (0..labels)
                    .map(|i| (format!("label-{i}"), "x".repeat(40)))
                    .collect(),
                ..PeerIdentity::default()
            })),
        }
    }

    fn update(peers: usize, removed: usize) -> ConfigUpdate {
        ConfigUpdate {
            version: 7,
            full: true,
            upserted: (0..peers).map(|i| peer(&format!("pod-{i}"), 2)).collect(),
            removed: (0..removed)
                .map(|i| format!("peer/shop/gone-{i}"))
                .collect(),
            more: false,
        }
    }

    fn assemble(parts: Vec<ConfigUpdate>) -> Vec<ConfigUpdate> {
        let mut assembler = Assembler::default();
        parts
            .into_iter()
            .filter_map(|part| assembler.add(part).expect("parts of one update"))
            .collect()
    }

    #[test]
    fn an_update_that_fits_is_one_part_as_it_was() {
        let small = update(3, 1);
        assert_eq!(split(small.clone(), MAX_PART_BYTES), [small]);
    }

    #[test]
    fn a_large_update_travels_in_parts_under_the_limit_and_assembles_to_itself() {
        let large = update(2_000, 500);
        assert!(
            large.encoded_len() > 10 * MAX_PART_BYTES,
            "the test needs a large update"
        );
        let parts = split(large.clone(), MAX_PART_BYTES);

        assert!(parts.len() > 10, "{} parts", parts.len());
        // The limit counts resources and keys; version, full and more add a few bytes.
        for part in &parts {
            assert!(
                part.encoded_len() <= MAX_PART_BYTES + 16,
                "{}",
                part.encoded_len()
            );
            assert_eq!((part.version, part.full), (7, true));
        }
        let more: Vec<bool> = parts.iter().map(|part| part.more).collect();
        assert_eq!(more.iter().filter(|&&more| !more).count(), 1, "{more:?}");
        assert!(!more[more.len() - 1], "only the last part ends the update");
        assert_eq!(assemble(parts), [large]);
    }

    #[test]
    fn a_resource_larger_than_the_limit_travels_alone() {
        let mut update = update(2, 0);
        update.upserted.insert(1, peer("huge", 2_000));
        let parts = split(update.clone(), MAX_PART_BYTES);

        let sizes: Vec<usize> = parts.iter().map(|part| part.upserted.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
        assert_eq!(parts[1].upserted[0].key, "peer/shop/huge");
        assert_eq!(assemble(parts), [update]);
    }

    #[test]
    fn an_empty_delta_is_one_empty_part() {
        let empty = ConfigUpdate {
            version: 3,
            ..ConfigUpdate::default()
        };
        assert_eq!(split(empty.clone(), MAX_PART_BYTES), [empty]);
    }

    #[test]
    fn a_part_of_another_update_is_refused() {
        let mut assembler = Assembler::default();
        let mut parts = split(update(2_000, 0), MAX_PART_BYTES).into_iter();
        assert!(assembler.add(parts.next().unwrap()).unwrap().is_none());

        let newer = ConfigUpdate {
            version: 8,
            ..ConfigUpdate::default()
        };
        let error = assembler.add(newer).unwrap_err();
        assert_eq!((error.pending, error.got), (7, 8));
        assert!(
            error
                .to_string()
                .contains("version 7 (full: true) was incomplete"),
            "{error}"
        );
        // What was pending is dropped: the next update starts afresh.
        let next = update(1, 0);
        assert_eq!(assembler.add(next.clone()).unwrap(), Some(next));
    }
}
