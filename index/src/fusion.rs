//! How keyword and semantic evidence become one ranking.
//!
//! Reciprocal rank fusion scores a list's rank alone, so the keyword #1 counts as much as the
//! semantic #1 even when it matched one common word of a six-word question ("…I picked them
//! *out*…" for "connection cuts out at night"). Here each candidate instead gets
//!
//! ```text
//! score = semantic + keyword_weight × coverage + bm25_weight × bm25
//! ```
//!
//! - `semantic` is the candidate's cosine similarity to the query, relative to the semantic
//!   list: 1 for its best, 0 for its last (a candidate the list did not reach counts as its
//!   last). Cosines of one query are comparable with each other, not with another query's, and
//!   the spread between the best and the K-th neighbour is what a keyword match must overcome.
//! - `coverage` is the share of the query's keyword evidence the segment holds: the inverse
//!   document frequencies of the query words it contains over those of all the query words.
//!   One common word of a long question covers little; a rare word asked for alone (a name,
//!   an order number, "pharmacy") covers everything.
//! - `bm25` is the candidate's BM25 score over the keyword list's best (0 when the list does
//!   not hold it): among segments that cover a query alike, term frequency and length decide.
//!
//! The weight was chosen on the tuning half of the labelled set (`callpipe eval-search
//! --tune`); the README has the table. The same code ranks for every backend: the backends
//! only supply candidates and word statistics.
//!
//! Query constraints (phrases, exclusions, phone numbers) are checked here against each
//! candidate's text, so a backend that returns a superset of a phrase's matches, or a
//! semantic neighbour that lacks the phrase, never surfaces.

use std::collections::HashSet;
use std::sync::LazyLock;

use callpipe_common::store::{words, KeywordHits};
use rust_stemmers::{Algorithm, Stemmer};

use crate::query::ParsedQuery;

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// How fused scores are formed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionWeights {
    /// How much a segment holding every query word gains over one holding none, in units of
    /// the semantic list's spread (best to K-th neighbour).
    pub keyword_weight: f32,
    /// How much the best BM25 score of the keyword list gains over none.
    pub bm25_weight: f32,
    /// Coverage is raised to this power: above 1, holding part of a query earns much less
    /// than holding all of it.
    pub coverage_power: f32,
}

impl Default for FusionWeights {
    /// Chosen on the tuning split of `tests/fixtures/search` (see the README's relevance
    /// table): the best mean reciprocal rank over every query kind.
    fn default() -> Self {
        FusionWeights {
            keyword_weight: 1.25,
            bm25_weight: 0.3,
            coverage_power: 1.0,
        }
    }
}

/// A segment's text, as fusion compares it with a query.
#[derive(Debug, Clone, Default)]
pub struct Analyzed {
    /// Its words, stemmed, in order.
    stems: Vec<String>,
    /// Its runs of digits, separators between them dropped (`415-555 0134` is one run).
    digit_runs: Vec<String>,
}

/// Stems of `text`'s words, in order.
fn stems(text: &str) -> Vec<String> {
    words(text)
        .iter()
        .map(|w| STEMMER.stem(w).into_owned())
        .collect()
}

impl Analyzed {
    pub fn new(text: &str) -> Self {
        let mut digit_runs = Vec::new();
        let mut run = String::new();
        let mut pending: Option<char> = None;
        for c in text.chars() {
            if c.is_ascii_digit() {
                run.push(c);
                pending = None;
            } else if !run.is_empty() && pending.is_none() && " +()-.".contains(c) {
                // One separator may sit between digit groups; two end the run.
                pending = Some(c);
            } else if !run.is_empty() {
                digit_runs.push(std::mem::take(&mut run));
                pending = None;
            }
        }
        if !run.is_empty() {
            digit_runs.push(run);
        }
        Analyzed {
            stems: stems(text),
            digit_runs,
        }
    }

    fn holds(&self, phrase: &[String]) -> bool {
        !phrase.is_empty() && self.stems.windows(phrase.len()).any(|w| w == phrase)
    }
}

/// The query's side of fusion: its words' stems and weights, and its constraints.
#[derive(Debug, Clone)]
pub struct QueryEvidence {
    /// Distinct stems of the query's positive words, each with its inverse document frequency.
    weighted: Vec<(String, f32)>,
    total: f32,
    phrases: Vec<Vec<String>>,
    excluded: Vec<Vec<String>>,
    digits: Vec<String>,
}

/// BM25's inverse document frequency (the Lucene form, never negative).
fn idf(documents: u64, frequency: u64) -> f32 {
    let n = documents.max(frequency) as f32;
    let df = frequency as f32;
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

impl QueryEvidence {
    pub fn new(query: &ParsedQuery, stats: &KeywordHits) -> Self {
        let mut weighted: Vec<(String, f32)> = Vec::new();
        for (i, word) in query.keyword.positive_words().iter().enumerate() {
            let stem = STEMMER.stem(word).into_owned();
            let frequency = stats.frequencies.get(i).copied().unwrap_or(0);
            let weight = idf(stats.documents, frequency);
            match weighted.iter_mut().find(|(s, _)| *s == stem) {
                // Two forms of one word (`refund`, `refunds`): count it once, as its rarer form.
                Some(existing) => existing.1 = existing.1.max(weight),
                None => weighted.push((stem, weight)),
            }
        }
        let stem_all = |p: &Vec<String>| -> Vec<String> {
            p.iter().map(|w| STEMMER.stem(w).into_owned()).collect()
        };
        QueryEvidence {
            total: weighted.iter().map(|(_, w)| w).sum(),
            weighted,
            phrases: query.keyword.phrases.iter().map(stem_all).collect(),
            excluded: query.keyword.excluded.iter().map(stem_all).collect(),
            digits: query.digits.clone(),
        }
    }

    /// Whether `segment` meets the query's constraints: every phrase and phone number in it,
    /// no excluded word or phrase.
    pub fn admits(&self, segment: &Analyzed) -> bool {
        self.phrases.iter().all(|p| segment.holds(p))
            && !self.excluded.iter().any(|p| segment.holds(p))
            && self
                .digits
                .iter()
                .all(|d| segment.digit_runs.iter().any(|r| r.contains(d.as_str())))
    }

    /// The share of the query's word weight that `segment` holds, 0 to 1.
    pub fn coverage(&self, segment: &Analyzed) -> f32 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let present: HashSet<&str> = segment.stems.iter().map(String::as_str).collect();
        let held: f32 = self
            .weighted
            .iter()
            .filter(|(s, _)| present.contains(s.as_str()))
            .map(|(_, w)| w)
            .sum();
        held / self.total
    }
}

/// One candidate's evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Cosine similarity to the query, when the semantic list holds the candidate.
    pub cosine: Option<f32>,
    /// See [`QueryEvidence::coverage`].
    pub coverage: f32,
    /// The keyword backend's BM25 score, when the keyword list holds the candidate.
    pub bm25: Option<f32>,
    /// 1-based ranks in the keyword and the semantic list.
    pub keyword_rank: Option<usize>,
    pub semantic_rank: Option<usize>,
}

/// The semantic list's best and last cosines: what `semantic` is measured between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticSpread {
    pub best: f32,
    pub last: f32,
}

impl SemanticSpread {
    pub fn of(cosines: impl IntoIterator<Item = f32>) -> Option<Self> {
        cosines.into_iter().fold(None, |acc, c| {
            Some(match acc {
                None => SemanticSpread { best: c, last: c },
                Some(s) => SemanticSpread {
                    best: s.best.max(c),
                    last: s.last.min(c),
                },
            })
        })
    }

    /// A cosine relative to the spread, 0 (the last, or below) to 1 (the best).
    fn relative(&self, cosine: Option<f32>) -> f32 {
        let width = self.best - self.last;
        match cosine {
            Some(c) if width > f32::EPSILON => ((c - self.last) / width).clamp(0.0, 1.0),
            Some(_) => 1.0,
            None => 0.0,
        }
    }
}

/// The fused score of one candidate; `best_bm25` is the keyword list's best score.
pub fn fused_score(
    e: &Evidence,
    spread: Option<SemanticSpread>,
    best_bm25: Option<f32>,
    weights: &FusionWeights,
) -> f32 {
    let semantic = spread.map_or(0.0, |s| s.relative(e.cosine));
    let bm25 = match (e.bm25, best_bm25) {
        (Some(b), Some(best)) if best > 0.0 => (b / best).clamp(0.0, 1.0),
        _ => 0.0,
    };
    semantic
        + weights.keyword_weight * e.coverage.powf(weights.coverage_power)
        + weights.bm25_weight * bm25
}

/// Reciprocal rank fusion, `Σ 1 / (k + rank)`: the rank-only baseline `eval-search` compares
/// against.
pub fn reciprocal_rank(e: &Evidence, k: f32) -> f32 {
    [e.keyword_rank, e.semantic_rank]
        .iter()
        .flatten()
        .map(|r| 1.0 / (k + *r as f32))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;

    fn stats(documents: u64, frequencies: &[u64]) -> KeywordHits {
        KeywordHits {
            hits: Vec::new(),
            documents,
            frequencies: frequencies.to_vec(),
        }
    }

    #[test]
    fn one_common_word_covers_little_and_a_rare_word_covers_all() {
        // connection, cuts, out, night over 10,000 segments.
        let q = parse("connection cuts out at night");
        let e = QueryEvidence::new(&q, &stats(10_000, &[40, 30, 2_000, 60]));
        let common = e.coverage(&Analyzed::new("I picked them out last week."));
        let most = e.coverage(&Analyzed::new("The connection cuts every night."));
        assert!(common < 0.1, "{common}");
        assert!(most > 0.9, "{most}");
        let q = parse("pharmacy");
        let e = QueryEvidence::new(&q, &stats(10_000, &[3]));
        assert_eq!(e.coverage(&Analyzed::new("At the pharmacy counter.")), 1.0);
        // Stemming: forms of a word match.
        let q = parse("refunds");
        let e = QueryEvidence::new(&q, &stats(100, &[3]));
        assert_eq!(e.coverage(&Analyzed::new("It was refunded.")), 1.0);
    }

    #[test]
    fn the_best_semantic_match_beats_a_one_common_word_keyword_match() {
        let weights = FusionWeights::default();
        let spread = SemanticSpread::of([0.62, 0.55, 0.31]);
        let semantic_best = Evidence {
            cosine: Some(0.62),
            coverage: 0.0,
            bm25: None,
            keyword_rank: None,
            semantic_rank: Some(1),
        };
        let one_common_word = Evidence {
            cosine: None,
            coverage: 0.06,
            bm25: Some(3.2),
            keyword_rank: Some(1),
            semantic_rank: None,
        };
        assert!(
            fused_score(&semantic_best, spread, Some(3.2), &weights)
                > fused_score(&one_common_word, spread, Some(3.2), &weights)
        );
        // Under rank fusion the two tie at 1/61, the failure this replaces.
        assert_eq!(
            reciprocal_rank(&semantic_best, 60.0),
            reciprocal_rank(&one_common_word, 60.0)
        );
    }

    #[test]
    fn constraints_are_checked_on_the_text() {
        let q = parse("\"late fee\" -waived");
        let e = QueryEvidence::new(&q, &stats(100, &[5, 5]));
        assert!(e.admits(&Analyzed::new("There is a late fee of ten dollars.")));
        assert!(!e.admits(&Analyzed::new("The fee was late.")));
        assert!(!e.admits(&Analyzed::new("The late fee is waived.")));
        let q = parse("555-0134");
        let e = QueryEvidence::new(&q, &stats(100, &[1, 1, 1]));
        assert!(e.admits(&Analyzed::new("Call me on 415 555 0134, please.")));
        assert!(e.admits(&Analyzed::new("It is 5550134.")));
        assert!(!e.admits(&Analyzed::new("555 and then 0134.")));
    }
}
