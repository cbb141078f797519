//! The 24 recovery words `wzp-client identity restore` reads: any text gives
//! a seed or an error saying which word is wrong, how many there are, or
//! that the checksum fails (fuzzed by fuzz/fuzz_targets/recovery_words.rs).

use wzp_proto::Seed;

/// How many words a recovery phrase has.
pub const WORDS: usize = 24;
/// Unknown words named in one error; the rest are counted.
const NAMED: usize = 3;
/// BIP39 English words are at most 8 letters: longer text is cut in errors
/// and gets no did-you-mean.
const LONGEST: usize = 16;

const AGAIN: &str = "give the 24 words `wzp-client identity backup` printed, in order";

/// The seed `text` (whitespace-separated words, any case) stands for.
pub fn parse(text: &str) -> Result<Seed, String> {
    let list: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if list.is_empty() {
        return Err(format!("no recovery words: {AGAIN}"));
    }
    let english = bip39::Language::English;
    let unknown: Vec<(usize, &str)> = list
        .iter()
        .enumerate()
        .filter(|(_, w)| english.find_word(w).is_none())
        .map(|(i, w)| (i, w.as_str()))
        .collect();
    if !unknown.is_empty() {
        let mut named: Vec<String> = unknown
            .iter()
            .take(NAMED)
            .map(|&(i, w)| describe(i, w))
            .collect();
        if unknown.len() > NAMED {
            named.push(format!("and {} more", unknown.len() - NAMED));
        }
        return Err(format!(
            "not in the BIP39 English word list: {}; {AGAIN}",
            named.join(", ")
        ));
    }
    if list.len() != WORDS {
        return Err(format!(
            "expected {WORDS} recovery words, got {}; {AGAIN}",
            list.len()
        ));
    }
    Seed::from_mnemonic(&list.join(" "))
        .map_err(|e| format!("{e} (a word is wrong, or two are swapped); {AGAIN}"))
}

fn describe(index: usize, word: &str) -> String {
    if word.chars().count() > LONGEST {
        let cut: String = word.chars().take(LONGEST).collect();
        return format!("word {} `{cut}...`", index + 1);
    }
    let english = bip39::Language::English;
    match wzp_engine::error::did_you_mean(word, english.word_list().iter().copied()) {
        Some(m) => format!("word {} `{word}` (did you mean `{m}`?)", index + 1),
        None => format!("word {} `{word}`", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_phrases_say_what_is_wrong() {
        let zero24 = format!("{} art", ["abandon"; 23].join(" "));
        let long = "x".repeat(100_000);
        let cases: Vec<(&str, String, &[&str])> = vec![
            ("empty", String::new(), &["no recovery words"]),
            ("23", ["abandon"; 23].join(" "), &["expected 24", "got 23"]),
            (
                "12 valid",
                format!("{} about", ["abandon"; 11].join(" ")),
                &["got 12"],
            ),
            (
                "checksum",
                ["abandon"; 24].join(" "),
                &["checksum", "swapped"],
            ),
            (
                "typo",
                zero24.replacen("abandon", "abandn", 1),
                &["word 1 `abandn` (did you mean `abandon`?)"],
            ),
            (
                "many unknown",
                "q1 q2 q3 q4 q5".into(),
                &["word 1 `q1`", "word 3 `q3`", "and 2 more"],
            ),
            ("a huge word", long, &["word 1 `xxxxxxxxxxxxxxxx...`"]),
            ("non-ascii", "ábandon ☃".into(), &["word 1", "word 2 `☃`"]),
        ];
        for (what, text, wanted) in cases {
            let e = parse(&text).unwrap_err();
            for w in wanted {
                assert!(e.contains(w), "{what}: {e:?} lacks {w:?}");
            }
            assert!(e.len() < 600, "{what}: {} bytes of error", e.len());
        }
        let seed = parse(&zero24.to_uppercase()).unwrap();
        assert_eq!(seed.as_bytes(), &[0; 32]);
        let again = parse(&seed.to_mnemonic()).unwrap();
        assert_eq!(again.as_bytes(), seed.as_bytes());
    }
}
