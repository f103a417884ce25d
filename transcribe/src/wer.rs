//! Word error rate with the usual normalisation, for `callpipe eval`.
//!
//! Both sides are lower-cased, stripped of punctuation, and numbers are written out as words
//! ("42" → "forty two", "3.5" → "three point five", "1st" → "first", "555-0123" → digits one
//! by one), with a few spoken abbreviations expanded ("mr" → "mister"). Then WER is the word
//! edit distance over the reference length.

/// Normalised words of `text`.
pub fn normalize(text: &str) -> Vec<String> {
    let lowered = text
        .to_lowercase()
        .replace('%', " percent ")
        .replace('&', " and ")
        .replace(['—', '–'], " ");
    let mut out = Vec::new();
    for raw in lowered.split_whitespace() {
        // Digit groups joined by hyphens are phone-style numbers, read digit by digit.
        let parts: Vec<&str> = raw.split('-').filter(|p| !p.is_empty()).collect();
        let phone_like = parts.len() > 1
            && parts.iter().all(|p| {
                p.trim_matches(|c: char| !c.is_alphanumeric())
                    .chars()
                    .all(|c| c.is_ascii_digit())
            });
        for part in parts {
            let word = part.trim_matches(|c: char| !c.is_alphanumeric());
            if word.is_empty() {
                continue;
            }
            if phone_like {
                out.extend(word.chars().filter_map(digit_word).map(str::to_owned));
                continue;
            }
            push_word(word, &mut out);
        }
    }
    out
}

fn push_word(word: &str, out: &mut Vec<String>) {
    let numeric = word.replace(',', "");
    if let Some(n) = ordinal(&numeric) {
        out.extend(n.split(' ').map(str::to_owned));
        return;
    }
    if numeric.chars().all(|c| c.is_ascii_digit()) && !numeric.is_empty() {
        if numeric.len() > 1 && numeric.starts_with('0') || numeric.len() > 9 {
            out.extend(numeric.chars().filter_map(digit_word).map(str::to_owned));
        } else if let Ok(n) = numeric.parse::<u64>() {
            out.extend(cardinal(n).split(' ').map(str::to_owned));
        }
        return;
    }
    if let Some((int, frac)) = numeric.split_once('.') {
        if !int.is_empty()
            && !frac.is_empty()
            && int.chars().all(|c| c.is_ascii_digit())
            && frac.chars().all(|c| c.is_ascii_digit())
        {
            if let Ok(n) = int.parse::<u64>() {
                out.extend(cardinal(n).split(' ').map(str::to_owned));
                out.push("point".into());
                out.extend(frac.chars().filter_map(digit_word).map(str::to_owned));
                return;
            }
        }
    }
    // Keep apostrophes inside words ("don't"); drop other punctuation.
    let cleaned: String = word
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .collect();
    let expanded = match cleaned.as_str() {
        "mr" => "mister",
        "mrs" => "missus",
        "ms" => "miss",
        "dr" => "doctor",
        "ok" | "okay" => "okay",
        other => other,
    };
    if !expanded.is_empty() {
        out.push(expanded.to_owned());
    }
}

fn digit_word(c: char) -> Option<&'static str> {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    c.to_digit(10).map(|d| DIGITS[d as usize])
}

/// English words for `n`, without "and": 115 → "one hundred fifteen".
pub fn cardinal(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    fn below_thousand(n: u64, out: &mut Vec<&'static str>) {
        if n >= 100 {
            out.push(ONES[(n / 100) as usize]);
            out.push("hundred");
        }
        let rest = n % 100;
        if rest >= 20 {
            out.push(TENS[(rest / 10) as usize]);
            if !rest.is_multiple_of(10) {
                out.push(ONES[(rest % 10) as usize]);
            }
        } else if rest > 0 || n == 0 {
            out.push(ONES[rest as usize]);
        }
    }
    if n == 0 {
        return "zero".into();
    }
    let mut words = Vec::new();
    for (scale, name) in [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if !(n / scale).is_multiple_of(1000) {
            below_thousand(n / scale % 1000, &mut words);
            words.push(name);
        }
    }
    if !n.is_multiple_of(1000) {
        below_thousand(n % 1000, &mut words);
    }
    words.join(" ")
}

/// "1st", "22nd", "3rd", "4th" → ordinal words.
fn ordinal(word: &str) -> Option<String> {
    let digits_end = word.find(|c: char| !c.is_ascii_digit())?;
    let (digits, suffix) = word.split_at(digits_end);
    if digits.is_empty() || !matches!(suffix, "st" | "nd" | "rd" | "th") {
        return None;
    }
    let words = cardinal(digits.parse().ok()?);
    let (head, last) = match words.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l.to_owned()),
        None => (String::new(), words.clone()),
    };
    let last = match last.as_str() {
        "one" => "first".to_owned(),
        "two" => "second".to_owned(),
        "three" => "third".to_owned(),
        "five" => "fifth".to_owned(),
        "eight" => "eighth".to_owned(),
        "nine" => "ninth".to_owned(),
        "twelve" => "twelfth".to_owned(),
        l if l.ends_with('y') => format!("{}ieth", &l[..l.len() - 1]),
        l => format!("{l}th"),
    };
    Some(format!("{head}{last}"))
}

/// Word-level edit counts of a hypothesis against a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    /// Substitutions + deletions + insertions.
    pub edits: usize,
    pub reference_words: usize,
}

impl Errors {
    pub fn wer(&self) -> f64 {
        if self.reference_words == 0 {
            return if self.edits == 0 { 0.0 } else { 1.0 };
        }
        self.edits as f64 / self.reference_words as f64
    }
}

impl std::ops::AddAssign for Errors {
    fn add_assign(&mut self, other: Self) {
        self.edits += other.edits;
        self.reference_words += other.reference_words;
    }
}

/// Normalises both texts and counts the word edits between them.
pub fn errors(reference: &str, hypothesis: &str) -> Errors {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    Errors {
        edits: edit_distance(&r, &h),
        reference_words: r.len(),
    }
}

fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_spells_numbers_and_drops_punctuation() {
        assert_eq!(
            normalize("And so, my fellow Americans!"),
            ["and", "so", "my", "fellow", "americans"]
        );
        assert_eq!(
            normalize("I paid 1,250 dollars"),
            ["i", "paid", "one", "thousand", "two", "hundred", "fifty", "dollars"]
        );
        assert_eq!(
            normalize("Call 555-0123 now"),
            ["call", "five", "five", "five", "zero", "one", "two", "three", "now"]
        );
        assert_eq!(
            normalize("the 21st, 3.5% rise"),
            ["the", "twenty", "first", "three", "point", "five", "percent", "rise"]
        );
        assert_eq!(
            normalize("Mr. Dashwood didn't"),
            ["mister", "dashwood", "didn't"]
        );
        assert_eq!(cardinal(100_000_007), "one hundred million seven");
        assert_eq!(ordinal("40th").as_deref(), Some("fortieth"));
    }

    #[test]
    fn wer_counts_substitutions_insertions_and_deletions() {
        let e = errors("the cat sat on the mat", "the cat sat on a mat today");
        assert_eq!(
            e,
            Errors {
                edits: 2,
                reference_words: 6
            }
        );
        assert!((e.wer() - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(errors("Hello, world.", "hello world").edits, 0);
        assert_eq!(errors("", "").wer(), 0.0);
    }
}
