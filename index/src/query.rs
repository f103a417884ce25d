//! What a user typed, understood the way search boxes are: plain words, `"quoted phrases"`
//! that must occur, `-word` or `-"a phrase"` to leave segments out, a call id to search one
//! call, and a phone number matched digit for digit.
//!
//! Parsing happens once, here, for every backend: the keyword backends receive plain words
//! ([`KeywordQuery`]) and the embedding receives the text without the operators, so the
//! embedded and the cloud configurations cannot read a query differently.

use callpipe_common::ids::CallId;
use callpipe_common::store::{words, KeywordQuery};

/// Function words that appear in nearly every spoken sentence. They are left out of keyword
/// matching unless the query has nothing else: a match on one of them is no evidence (BM25
/// gives them almost no weight, and fusion weighs a match by its words' rarity), while
/// matching them makes the keyword backend score most of the index.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "had", "has",
    "have", "i", "if", "in", "is", "it", "me", "my", "of", "on", "or", "our", "so", "that", "the",
    "their", "there", "they", "this", "to", "was", "we", "were", "what", "with", "you", "your",
];

/// A phone number has at least this many digits; shorter runs are ordinary words (an order
/// number, a price, a time).
const PHONE_DIGITS: usize = 7;

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedQuery {
    /// What the embedding sees: the words and phrases as typed, in order, without the
    /// exclusions, the call id or the quote marks.
    pub semantic: String,
    /// What the keyword backend sees.
    pub keyword: KeywordQuery,
    /// Digit sequences (phone numbers) a segment must hold, whatever separates its digits.
    pub digits: Vec<String>,
    /// A call id typed in the query: the search covers that call only.
    pub call_id: Option<CallId>,
}

impl ParsedQuery {
    /// Whether there is anything to rank by: words for either list.
    pub fn has_words(&self) -> bool {
        !self.keyword.is_empty() || !self.semantic.trim().is_empty()
    }
}

/// A piece of the query before words are split out.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Plain(&'a str),
    Phrase(&'a str),
    Excluded(&'a str),
}

/// Splits at whitespace, keeping `"…"` together (an unclosed quote runs to the end) and
/// marking a leading `-` before a word or a quote as an exclusion.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return out;
        }
        let excluded = rest.starts_with('-')
            && rest[1..].starts_with(|c: char| c == '"' || c.is_alphanumeric());
        let body = if excluded { &rest[1..] } else { rest };
        if let Some(quoted) = body.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let inner = &quoted[..end];
            out.push(if excluded {
                Token::Excluded(inner)
            } else {
                Token::Phrase(inner)
            });
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = body.find(char::is_whitespace).unwrap_or(body.len());
            let word = &body[..end];
            out.push(if excluded {
                Token::Excluded(word)
            } else {
                Token::Plain(word)
            });
            rest = &body[end..];
        }
    }
}

/// A token that can be part of a phone number: digits with `+ ( ) - .` between them.
fn phone_part(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_digit())
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || "+()-.".contains(c))
}

/// A call id as `calls list` shows it: 32 hexadecimal digits.
fn call_id(token: &str) -> Option<CallId> {
    (token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| CallId::from_stored(token.to_ascii_lowercase()))
}

/// Parses `text` (see the module documentation). Never fails: any text is some query.
pub fn parse(text: &str) -> ParsedQuery {
    let mut parsed = ParsedQuery::default();
    let mut semantic: Vec<&str> = Vec::new();
    let mut plain: Vec<String> = Vec::new();
    let tokens = tokens(text);
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i] {
            Token::Phrase(p) => {
                let w = words(p);
                if !w.is_empty() {
                    semantic.push(p);
                    parsed.keyword.phrases.push(w);
                }
                i += 1;
            }
            Token::Excluded(p) => {
                let w = words(p);
                if !w.is_empty() {
                    parsed.keyword.excluded.push(w);
                }
                i += 1;
            }
            Token::Plain(t) if call_id(t).is_some() => {
                parsed.call_id = call_id(t);
                i += 1;
            }
            Token::Plain(t) if phone_part(t) => {
                // Consecutive number parts: `(415) 555-0134`, `+1 415 555 0134`.
                let start = i;
                while i < tokens.len() && matches!(tokens[i], Token::Plain(t) if phone_part(t)) {
                    i += 1;
                }
                let parts: Vec<&str> = tokens[start..i]
                    .iter()
                    .filter_map(|t| match t {
                        Token::Plain(t) => Some(*t),
                        _ => None,
                    })
                    .collect();
                let digits: String = parts
                    .iter()
                    .flat_map(|p| p.chars())
                    .filter(char::is_ascii_digit)
                    .collect();
                semantic.extend(&parts);
                let groups: Vec<String> = parts.iter().flat_map(|p| words(p)).collect();
                if digits.len() >= PHONE_DIGITS {
                    // The groups as typed and all the digits as one word: a transcript may
                    // write either.
                    plain.extend(groups);
                    plain.push(digits.clone());
                    parsed.digits.push(digits);
                } else {
                    plain.extend(groups);
                }
            }
            Token::Plain(t) => {
                semantic.push(t);
                plain.extend(words(t));
                i += 1;
            }
        }
    }
    let content: Vec<String> = plain
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    let chosen = if content.is_empty() && parsed.keyword.phrases.is_empty() {
        plain
    } else {
        content
    };
    for w in chosen {
        if !parsed.keyword.terms.contains(&w) {
            parsed.keyword.terms.push(w);
        }
    }
    parsed.semantic = semantic.join(" ");
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn plain_words_drop_function_words_for_keywords_but_not_for_meaning() {
        let q = parse("my connection cuts out at night");
        assert_eq!(
            q.keyword.terms,
            strings(&["connection", "cuts", "out", "night"])
        );
        assert_eq!(q.semantic, "my connection cuts out at night");
        // Only function words: they are all there is to match.
        assert_eq!(
            parse("what is it").keyword.terms,
            strings(&["what", "is", "it"])
        );
    }

    #[test]
    fn quotes_make_phrases_and_a_minus_excludes() {
        let q = parse("\"late fee\" refund -waived -\"bank transfer\" well-known");
        assert_eq!(q.keyword.phrases, vec![strings(&["late", "fee"])]);
        assert_eq!(q.keyword.terms, strings(&["refund", "well", "known"]));
        assert_eq!(
            q.keyword.excluded,
            vec![strings(&["waived"]), strings(&["bank", "transfer"])]
        );
        assert_eq!(q.semantic, "late fee refund well-known");
        // An unclosed quote runs to the end; a lone minus is nothing.
        let q = parse("- \"pharmacy counter");
        assert_eq!(q.keyword.phrases, vec![strings(&["pharmacy", "counter"])]);
        assert!(q.keyword.excluded.is_empty());
    }

    #[test]
    fn a_phone_number_is_matched_by_its_digits() {
        let q = parse("called from (415) 555-0134 yesterday");
        assert_eq!(q.digits, strings(&["4155550134"]));
        assert_eq!(
            q.keyword.terms,
            strings(&["called", "415", "555", "0134", "4155550134", "yesterday"])
        );
        // Short numbers are words.
        let q = parse("order 47192");
        assert!(q.digits.is_empty());
        assert_eq!(q.keyword.terms, strings(&["order", "47192"]));
    }

    #[test]
    fn a_call_id_limits_the_search_to_that_call() {
        let id = CallId::from_source("file:///calls/a.wav");
        let q = parse(&format!("{} refund", id.as_str().to_uppercase()));
        assert_eq!(q.call_id, Some(id));
        assert_eq!(q.keyword.terms, strings(&["refund"]));
        assert_eq!(q.semantic, "refund");
    }

    #[test]
    fn hostile_text_is_words() {
        for text in [
            "AND OR NOT",
            "refund*",
            "col:x",
            "{\"match_all\": {}}",
            "\"",
            "-",
            "ünï 电话",
        ] {
            let q = parse(text);
            for w in q.keyword.positive_words() {
                assert!(
                    w.chars().all(|c| c.is_alphanumeric() || c == '\''),
                    "{text}: {w}"
                );
            }
        }
        assert!(!parse("  \"\" -\"\" ").has_words());
    }
}
