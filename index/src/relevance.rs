//! Measuring search: a labelled set of calls and queries, and the metrics of a ranked list.
//!
//! A set is a directory (`tests/fixtures/search` is the project's):
//! - `transcripts/<call>.json`: each call's transcript ([`Transcript`]), what gets indexed;
//! - `truth/<call>.json`: each call's true turns with their channel and times (as
//!   `scripts/make_call.py` writes them), what judgments point at;
//! - `queries/*.json`: arrays of [`SetQuery`]: the text, its kind, an optional filter, the
//!   relevant turns by index, and whether it belongs to the tuning or the held-out split.
//!
//! A retrieved unit is relevant when it lies on the channel of a relevant turn of the same
//! call and overlaps that turn for at least [`MIN_OVERLAP`] of the shorter of the two (a unit
//! may merge consecutive segments of one speaker; a turn may be cut into several segments).
//!
//! Metrics over the top 10, per query, then averaged: reciprocal rank of the first relevant
//! unit (MRR); recall@k as the relevant turns covered by the first k units over min(k, relevant
//! turns), so recall@1 is 1 exactly when the first result is right; nDCG@10 with a gain of 1 for
//! each unit that covers a turn no earlier unit covered; and call@1, whether the first result
//! is in a call with a relevant turn.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use callpipe_common::transcript::Transcript;
use callpipe_common::Role;
use serde::{Deserialize, Serialize};

/// The share of the shorter span that a unit and a turn must overlap.
pub const MIN_OVERLAP: f64 = 0.4;

/// Results scored per query.
pub const DEPTH: usize = 10;

/// What a query tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// What a party said, in other words.
    Paraphrase,
    /// An exact rare term: a name, a number, a product.
    Rare,
    /// A short keyword query.
    Keyword,
    /// A query with a filter (role, dates, duration).
    Filter,
}

impl QueryKind {
    pub const ALL: [QueryKind; 4] = [
        QueryKind::Paraphrase,
        QueryKind::Rare,
        QueryKind::Keyword,
        QueryKind::Filter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Paraphrase => "paraphrase",
            QueryKind::Rare => "rare",
            QueryKind::Keyword => "keyword",
            QueryKind::Filter => "filter",
        }
    }
}

/// Whether a query may be used to choose settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Used to choose the fusion weights.
    Tune,
    /// Never used to choose anything: the measure of what was chosen.
    Holdout,
}

/// A query's filter, as the CLI's flags spell it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryFilter {
    #[serde(default)]
    pub role: Option<Role>,
    /// A date (`YYYY-MM-DD`), inclusive.
    #[serde(default)]
    pub from: Option<String>,
    /// A date (`YYYY-MM-DD`), inclusive of that whole day.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub min_duration_s: Option<f64>,
    #[serde(default)]
    pub max_duration_s: Option<f64>,
}

/// Relevant turns of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judged {
    pub call: String,
    pub turns: Vec<usize>,
}

/// One labelled query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuery {
    pub id: String,
    pub kind: QueryKind,
    pub query: String,
    #[serde(default)]
    pub filter: Option<QueryFilter>,
    pub relevant: Vec<Judged>,
    pub split: Split,
}

/// A true turn of a call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TruthTurn {
    pub channel: u32,
    pub role: Role,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
}

#[derive(Debug, Deserialize)]
struct Truth {
    duration_s: f64,
    turns: Vec<TruthTurn>,
}

/// One call of the set.
#[derive(Debug, Clone)]
pub struct SetCall {
    /// The file stem shared by its transcript and truth files; it starts with the recording
    /// time, as call recorders name files.
    pub name: String,
    pub transcript: Transcript,
    pub turns: Vec<TruthTurn>,
    pub duration_s: f64,
}

/// A loaded set.
#[derive(Debug, Clone)]
pub struct SearchSet {
    /// By name.
    pub calls: BTreeMap<String, SetCall>,
    pub queries: Vec<SetQuery>,
}

/// Why a set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("query {id}: {reason}")]
    Query { id: String, reason: String },
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, SetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SetError::File {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SetError> {
    let file = |reason: String| SetError::File {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| file(e.to_string()))
}

impl SearchSet {
    /// Loads and checks `root`: every query's calls exist and its turns are in range.
    pub fn load(root: &Path) -> Result<Self, SetError> {
        let mut calls = BTreeMap::new();
        for path in json_files(&root.join("transcripts"))? {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let transcript: Transcript = read_json(&path)?;
            let truth_path = root.join("truth").join(format!("{name}.json"));
            let truth: Truth = read_json(&truth_path)?;
            calls.insert(
                name.clone(),
                SetCall {
                    name,
                    transcript,
                    turns: truth.turns,
                    duration_s: truth.duration_s,
                },
            );
        }
        if calls.is_empty() {
            return Err(SetError::File {
                path: root.join("transcripts"),
                reason: "holds no transcript (<call>.json)".into(),
            });
        }
        let mut queries = Vec::new();
        let mut ids = HashSet::new();
        for path in json_files(&root.join("queries"))? {
            let batch: Vec<SetQuery> = read_json(&path)?;
            for q in batch {
                let bad = |reason: String| SetError::Query {
                    id: q.id.clone(),
                    reason,
                };
                if !ids.insert(q.id.clone()) {
                    return Err(bad("the id is used twice".into()));
                }
                if q.relevant.is_empty() {
                    return Err(bad("no relevant turn".into()));
                }
                for j in &q.relevant {
                    let call = calls
                        .get(&j.call)
                        .ok_or_else(|| bad(format!("no call `{}` in the set", j.call)))?;
                    if let Some(t) = j.turns.iter().find(|&&t| t >= call.turns.len()) {
                        return Err(bad(format!(
                            "turn {t} of `{}`, which has {} turns",
                            j.call,
                            call.turns.len()
                        )));
                    }
                }
                queries.push(q);
            }
        }
        Ok(SearchSet { calls, queries })
    }

    /// The relevant turns of `query`, as (call, turn index) pairs.
    fn relevant<'q>(&self, query: &'q SetQuery) -> Vec<(&'q str, usize)> {
        let mut out: Vec<(&str, usize)> = query
            .relevant
            .iter()
            .flat_map(|j| j.turns.iter().map(move |&t| (j.call.as_str(), t)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The relevant turns that `unit` covers.
    fn covered<'q>(
        &self,
        relevant: &[(&'q str, usize)],
        unit: &Retrieved,
    ) -> Vec<(&'q str, usize)> {
        relevant
            .iter()
            .filter(|(call, t)| {
                call == &unit.call
                    && self.calls.get(*call).is_some_and(|c| {
                        let turn = &c.turns[*t];
                        turn.channel == unit.channel && overlaps(turn, unit)
                    })
            })
            .copied()
            .collect()
    }

    /// The metrics of `ranked` (best first) for `query`.
    pub fn score(&self, query: &SetQuery, ranked: &[Retrieved]) -> QueryScore {
        let relevant = self.relevant(query);
        let calls: HashSet<&str> = relevant.iter().map(|(c, _)| *c).collect();
        let mut seen: HashSet<(&str, usize)> = HashSet::new();
        let mut first = None;
        let mut dcg = 0.0;
        let mut found_at = [0usize; DEPTH];
        for (i, unit) in ranked.iter().take(DEPTH).enumerate() {
            let covered = self.covered(&relevant, unit);
            if !covered.is_empty() && first.is_none() {
                first = Some(i + 1);
            }
            let new = covered.iter().filter(|c| seen.insert(**c)).count();
            if new > 0 {
                dcg += 1.0 / ((i + 2) as f64).log2();
            }
            found_at[i] = seen.len();
        }
        // Carry the count past the end of a short list.
        for i in 1..DEPTH {
            found_at[i] = found_at[i].max(found_at[i - 1]);
        }
        let ideal: f64 = (0..DEPTH.min(relevant.len()))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let recall = |k: usize| found_at[k - 1] as f64 / k.min(relevant.len()).max(1) as f64;
        QueryScore {
            reciprocal_rank: first.map_or(0.0, |r| 1.0 / r as f64),
            recall_at_1: recall(1),
            recall_at_5: recall(5),
            recall_at_10: recall(10),
            ndcg_at_10: if ideal > 0.0 { dcg / ideal } else { 0.0 },
            call_at_1: ranked
                .first()
                .is_some_and(|u| calls.contains(u.call.as_str())),
        }
    }
}

fn overlaps(turn: &TruthTurn, unit: &Retrieved) -> bool {
    let overlap = unit.end_s.min(turn.end_s) - unit.start_s.max(turn.start_s);
    let shorter = (unit.end_s - unit.start_s)
        .min(turn.end_s - turn.start_s)
        .max(0.2);
    overlap >= MIN_OVERLAP * shorter
}

/// A result as judgments see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// The set's name of the call.
    pub call: String,
    pub channel: u32,
    pub start_s: f64,
    pub end_s: f64,
}

/// One query's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueryScore {
    pub reciprocal_rank: f64,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub ndcg_at_10: f64,
    pub call_at_1: bool,
}

/// Means over several queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub queries: usize,
    pub mrr: f64,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub ndcg_at_10: f64,
    pub call_at_1: f64,
}

impl Summary {
    pub fn of<'a>(scores: impl IntoIterator<Item = &'a QueryScore>) -> Self {
        let mut s = Summary::default();
        for q in scores {
            s.queries += 1;
            s.mrr += q.reciprocal_rank;
            s.recall_at_1 += q.recall_at_1;
            s.recall_at_5 += q.recall_at_5;
            s.recall_at_10 += q.recall_at_10;
            s.ndcg_at_10 += q.ndcg_at_10;
            s.call_at_1 += f64::from(u8::from(q.call_at_1));
        }
        if s.queries > 0 {
            let n = s.queries as f64;
            for v in [
                &mut s.mrr,
                &mut s.recall_at_1,
                &mut s.recall_at_5,
                &mut s.recall_at_10,
                &mut s.ndcg_at_10,
                &mut s.call_at_1,
            ] {
                *v /= n;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> SearchSet {
        let turn = |channel, start_s, end_s| TruthTurn {
            channel,
            role: if channel == 0 {
                Role::Agent
            } else {
                Role::Customer
            },
            start_s,
            end_s,
            text: String::new(),
        };
        let call = SetCall {
            name: "a".into(),
            transcript: Transcript {
                language: "en".into(),
                language_probability: 1.0,
                model: "m".into(),
                channels: Vec::new(),
            },
            turns: vec![turn(0, 0.0, 4.0), turn(1, 5.0, 9.0), turn(0, 10.0, 14.0)],
            duration_s: 15.0,
        };
        SearchSet {
            calls: BTreeMap::from([("a".to_owned(), call)]),
            queries: Vec::new(),
        }
    }

    fn unit(call: &str, channel: u32, start_s: f64, end_s: f64) -> Retrieved {
        Retrieved {
            call: call.into(),
            channel,
            start_s,
            end_s,
        }
    }

    fn query(turns: Vec<usize>) -> SetQuery {
        SetQuery {
            id: "q".into(),
            kind: QueryKind::Paraphrase,
            query: "x".into(),
            filter: None,
            relevant: vec![Judged {
                call: "a".into(),
                turns,
            }],
            split: Split::Tune,
        }
    }

    #[test]
    fn the_first_right_unit_sets_the_reciprocal_rank_and_recall_at_1() {
        let set = set();
        let q = query(vec![1]);
        // Wrong channel, then another call, then the turn (a segment of it).
        let ranked = [
            unit("a", 0, 5.0, 9.0),
            unit("b", 1, 5.0, 9.0),
            unit("a", 1, 6.0, 8.5),
        ];
        let s = set.score(&q, &ranked);
        assert!((s.reciprocal_rank - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.recall_at_1, 0.0);
        assert_eq!(s.recall_at_5, 1.0);
        assert!(s.call_at_1);
        let s = set.score(&q, &ranked[2..]);
        assert_eq!(
            (s.reciprocal_rank, s.recall_at_1, s.ndcg_at_10),
            (1.0, 1.0, 1.0)
        );
        // A unit barely touching the turn is not it.
        assert_eq!(
            set.score(&q, &[unit("a", 1, 8.8, 12.0)]).reciprocal_rank,
            0.0
        );
    }

    #[test]
    fn a_turn_found_twice_counts_once() {
        let set = set();
        let q = query(vec![0, 2]);
        let twice = [unit("a", 0, 0.0, 2.0), unit("a", 0, 2.0, 4.0)];
        let s = set.score(&q, &twice);
        assert_eq!(s.recall_at_5, 0.5);
        assert!(s.ndcg_at_10 < 1.0);
        let both = [unit("a", 0, 0.0, 4.0), unit("a", 0, 10.0, 14.0)];
        let s = set.score(&q, &both);
        assert_eq!((s.recall_at_1, s.recall_at_5), (1.0, 1.0));
        assert!((s.ndcg_at_10 - 1.0).abs() < 1e-9);
    }
}
