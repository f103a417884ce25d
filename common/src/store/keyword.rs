//! Keyword search over current segments' text.
//!
//! Search parses what a user typed once (see `callpipe_index::query`) into a [`KeywordQuery`]
//! of plain words, so no backend ever interprets query syntax: each builds its own query from
//! the words, and any input is safe. A backend also reports how many documents hold each word
//! ([`KeywordHits::frequencies`]): fusion weighs a keyword match by how rare its words are,
//! and both backends must give it the same evidence.

use async_trait::async_trait;

use super::{ScoredKey, SearchFilter, StoreError};

/// What keyword search looks for, as plain lowercase words (see [`words`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordQuery {
    /// Any of these may match; more and rarer matches rank higher.
    pub terms: Vec<String>,
    /// Each phrase must occur, its words in order. When there is one, `terms` only rank.
    pub phrases: Vec<Vec<String>>,
    /// A segment holding any of these (a word, or words in order) is left out.
    pub excluded: Vec<Vec<String>>,
}

impl KeywordQuery {
    /// Any of the words in `text`.
    pub fn any_of(text: &str) -> Self {
        KeywordQuery {
            terms: words(text),
            ..Default::default()
        }
    }

    /// Nothing to match: no term and no phrase.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.phrases.iter().all(|p| p.is_empty())
    }

    /// The distinct words that count towards a match, terms then phrase words, in order of
    /// first appearance: the words [`KeywordHits::frequencies`] are given for.
    pub fn positive_words(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let all = self.terms.iter().chain(self.phrases.iter().flatten());
        for word in all {
            if !out.contains(&word.as_str()) {
                out.push(word);
            }
        }
        out
    }
}

/// The best keyword matches and the corpus statistics of the query's words.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeywordHits {
    /// Best first (the backend's BM25), at most the limit asked for.
    pub hits: Vec<ScoredKey>,
    /// Documents the index holds (all calls, unfiltered: the `N` of inverse document
    /// frequency).
    pub documents: u64,
    /// For each of [`KeywordQuery::positive_words`], the documents that contain it (as the
    /// backend's analyzer matches it, so `refunds` may count `refund`).
    pub frequencies: Vec<u64>,
}

/// BM25-style keyword search. The embedded metadata store (SQLite FTS5) and the cloud vector
/// index (OpenSearch's `match` over the segment text) both provide it.
///
/// An implementation may return keys of stale or orphan segments (OpenSearch holds documents
/// of revisions being replaced); search joins every hit back to the metadata store, which
/// drops them. A backend that cannot match phrases exactly may return a superset (segments
/// holding a phrase's words in any order): search checks phrases and exclusions against each
/// segment's text.
#[async_trait]
pub trait KeywordIndex: std::fmt::Debug + Send + Sync + 'static {
    /// At most `limit` hits, best first, among segments passing `filter`, with the statistics
    /// of the query's words.
    async fn keyword_search(
        &self,
        query: &KeywordQuery,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<KeywordHits, StoreError>;
}

/// The words of `text`, lowercase: runs of letters and digits (any script), with an
/// apostrophe kept inside a word (`don't`). Everything else separates words, so no character
/// reaches a backend with a meaning beyond "part of a word".
pub fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe = matches!(c, '\'' | '\u{2019}')
            && i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if inner_apostrophe {
            word.push('\'');
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_syntax_and_case_and_keep_inner_apostrophes() {
        assert_eq!(
            words("Don't  REFUND* col:x \"NEAR(a b)\" 'quoted' 555-0134 café"),
            ["don't", "refund", "col", "x", "near", "a", "b", "quoted", "555", "0134", "café"]
        );
        assert_eq!(words("?! -- ''"), Vec::<String>::new());
    }

    #[test]
    fn positive_words_are_distinct_terms_then_phrase_words() {
        let q = KeywordQuery {
            terms: vec!["late".into(), "fee".into()],
            phrases: vec![vec!["late".into(), "payment".into()]],
            excluded: vec![vec!["fee".into()]],
        };
        assert_eq!(q.positive_words(), ["late", "fee", "payment"]);
        assert!(!q.is_empty());
        assert!(KeywordQuery::any_of("?!").is_empty());
    }
}
