//! The indexes the queries need: created by `callpipe setup` ([`super::MongoMetadata::ensure_indexes`]),
//! checked at start-up ([`MetadataStore::check_ready`](callpipe_common::store::MetadataStore)).

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::docs::{BACKFILL_JOBS, CALLS, SEGMENTS, VECTOR_BATCHES};

/// One index: its collection, name and keys.
pub(super) struct Spec {
    pub collection: &'static str,
    pub name: &'static str,
    pub keys: fn() -> Document,
}

impl Spec {
    pub fn model(&self) -> IndexModel {
        IndexModel::builder()
            .keys((self.keys)())
            .options(IndexOptions::builder().name(self.name.to_owned()).build())
            .build()
    }
}

/// Every index, by the query it serves. Point reads by `_id` need none: `_id` is always
/// indexed, and so is an anchored `_id` prefix (`calls_by_id_prefix`).
pub(super) const INDEXES: &[Spec] = &[
    // list_calls: newest first, ties by id.
    Spec {
        collection: CALLS,
        name: "by_recorded_at",
        keys: || doc! { "recorded_at_ms": -1, "_id": 1 },
    },
    // list_calls with a status (`calls list --status failed`).
    Spec {
        collection: CALLS,
        name: "by_status_recorded_at",
        keys: || doc! { "status": 1, "recorded_at_ms": -1 },
    },
    // segments and count_segments of one call's current revision, in time order; `seq`
    // completes the sort, so the index answers it without sorting in memory.
    Spec {
        collection: SEGMENTS,
        name: "by_call_revision_time",
        keys: || doc! { "call_id": 1, "revision": 1, "start_s": 1, "channel": 1, "seq": 1 },
    },
    // garbage: superseded batches, and open ones older than a cutoff.
    Spec {
        collection: VECTOR_BATCHES,
        name: "by_state_started_at",
        keys: || doc! { "state": 1, "started_at_ms": 1 },
    },
    // delete_call: every batch of the call becomes garbage.
    Spec {
        collection: VECTOR_BATCHES,
        name: "by_call",
        keys: || doc! { "call_id": 1 },
    },
    // job_calls: a backfill pass's calls by status (`backfill status`).
    Spec {
        collection: CALLS,
        name: "by_backfill_status",
        keys: || doc! { "backfill": 1, "status": 1 },
    },
    // list_jobs: most recently updated first.
    Spec {
        collection: BACKFILL_JOBS,
        name: "by_updated_at",
        keys: || doc! { "updated_at_ms": -1 },
    },
];

/// Whether `present` (an index's name and keys, as listed) is `spec`, by name or by keys: an
/// operator's equivalent index under another name serves the query as well.
pub(super) fn satisfies(spec: &Spec, name: &str, keys: &Document) -> bool {
    name == spec.name || same_keys(keys, &(spec.keys)())
}

/// Key patterns compared in order (it matters to an index) and by direction, whatever number
/// type the server lists them with (`1`, `1.0`, `NumberLong(1)`).
fn same_keys(a: &Document, b: &Document) -> bool {
    fn direction(v: &Bson) -> Option<String> {
        match v {
            Bson::Int32(n) => Some(n.signum().to_string()),
            Bson::Int64(n) => Some(n.signum().to_string()),
            Bson::Double(n) if *n > 0.0 => Some("1".into()),
            Bson::Double(n) if *n < 0.0 => Some("-1".into()),
            Bson::String(s) => Some(s.clone()),
            _ => None,
        }
    }
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb && direction(va).is_some() && direction(va) == direction(vb)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_patterns_match_in_order_and_by_direction() {
        let spec = &INDEXES[0];
        assert!(satisfies(spec, "by_recorded_at", &doc! {}));
        assert!(satisfies(
            spec,
            "other",
            &doc! { "recorded_at_ms": -1.0, "_id": 1_i64 }
        ));
        assert!(!satisfies(
            spec,
            "other",
            &doc! { "_id": 1, "recorded_at_ms": -1 }
        ));
        assert!(!satisfies(
            spec,
            "other",
            &doc! { "recorded_at_ms": 1, "_id": 1 }
        ));
        assert!(!satisfies(spec, "other", &doc! { "recorded_at_ms": -1 }));
    }
}
