//! Lanes: which work comes first when there is more than capacity.
//!
//! Live calls and new uploads come before backfill (DESIGN.md): a worker takes backfill work
//! only when the other lanes are empty. Every scheduler that holds work of several calls (the
//! engine's window queue, and the queues between stages) orders by lane.

use serde::{Deserialize, Serialize};

/// A call's priority, highest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A live call that just ended: someone is waiting for its transcript.
    Live,
    /// A recording that just arrived.
    #[default]
    Upload,
    /// Historical recordings: only when nothing else is waiting.
    Backfill,
}

impl Lane {
    /// Every lane, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Live, Lane::Upload, Lane::Backfill];

    /// The lane's position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The coordination store's admission set of this lane's calls in the pipeline, one
    /// member per call from its admission until its outcome. Live and new uploads share one:
    /// the ingest workers take backfill work only while it is empty. The backfill lane's is
    /// bounded by `[backfill] max_in_flight`.
    pub fn in_flight_key(self) -> &'static str {
        match self {
            Lane::Live | Lane::Upload => "in-flight/upload",
            Lane::Backfill => "in-flight/backfill",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Live => "live",
            Lane::Upload => "upload",
            Lane::Backfill => "backfill",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_order_by_priority() {
        assert!(Lane::Live < Lane::Upload && Lane::Upload < Lane::Backfill);
        for (i, lane) in Lane::ALL.iter().enumerate() {
            assert_eq!(lane.index(), i);
        }
        assert_eq!(
            serde_json::to_string(&Lane::Backfill).unwrap(),
            "\"backfill\""
        );
    }
}
