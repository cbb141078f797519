//! Names that look alike: the skeleton two names share when a reader could
//! take one for the other (after Unicode TS #39's "skeleton", with a table
//! of the look-alikes that matter for names written in Latin letters).
//!
//! A caller's alias is its own claim. One that *is* a contact's name on
//! another fingerprint is easy to catch; one that only looks like it
//! (`аlice` with a Cyrillic `а`, `b0b`, `modem` for `modern`, a zero-width
//! space inside) reads the same on a terminal and must be caught too.
//!
//! The skeleton: invisible characters (zero-width, bidirectional controls,
//! soft hyphens) and combining marks are dropped; fullwidth forms become
//! ASCII; accented Latin letters lose their accents; Cyrillic and Greek
//! letters shaped like Latin ones become those; `I`, `1` and `|` become
//! `l`, `0` becomes `o`; then lower case, and `rn` reads as `m`, `vv` as
//! `w`. Equal skeletons mean "could be mistaken", not "the same".

/// The skeleton of `name`: equal for names a reader could take for each
/// other.
pub fn skeleton(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if invisible(c) || combining(c) {
            continue;
        }
        let c = fullwidth(c);
        let c = unaccented(c).unwrap_or(c);
        let c = latin_shape(c).unwrap_or(c);
        out.extend(c.to_lowercase());
    }
    out.replace("rn", "m").replace("vv", "w")
}

/// Whether `a` and `b` could be taken for each other: as written (`Ilona`
/// and `llona`), or in one case (`ivan` and `Ivan`, whose `I` alone is
/// shaped like `l`).
pub fn look_alike(a: &str, b: &str) -> bool {
    skeleton(a) == skeleton(b) || skeleton(&a.to_lowercase()) == skeleton(&b.to_lowercase())
}

/// `name` with every character outside printable ASCII shown as its code
/// point (`\u{430}lice`), so a look-alike is visible as one.
pub fn reveal(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c.to_string()
            } else {
                format!("\\u{{{:x}}}", c as u32)
            }
        })
        .collect()
}

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
    )
}

fn combining(c: char) -> bool {
    matches!(
        c,
        '\u{300}'..='\u{36f}'
            | '\u{1ab0}'..='\u{1aff}'
            | '\u{1dc0}'..='\u{1dff}'
            | '\u{20d0}'..='\u{20ff}'
            | '\u{fe20}'..='\u{fe2f}'
    )
}

/// Fullwidth ASCII (U+FF01..U+FF5E) as ASCII.
fn fullwidth(c: char) -> char {
    match c {
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
        _ => c,
    }
}

/// A precomposed accented Latin letter's base letter.
fn unaccented(c: char) -> Option<char> {
    Some(match c {
        'À'..='Å' | 'Ā' | 'Ă' | 'Ą' => 'A',
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => 'C',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'Ď' | 'Đ' => 'D',
        'ď' | 'đ' => 'd',
        'È'..='Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => 'E',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => 'G',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'Ĥ' | 'Ħ' => 'H',
        'ĥ' | 'ħ' => 'h',
        'Ì'..='Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => 'I',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => 'i',
        'Ĵ' => 'J',
        'ĵ' => 'j',
        'Ķ' => 'K',
        'ķ' => 'k',
        'Ĺ' | 'Ļ' | 'Ľ' | 'Ŀ' | 'Ł' => 'L',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => 'N',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'Ò'..='Ö' | 'Ø' | 'Ō' | 'Ŏ' | 'Ő' => 'O',
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'Ŕ' | 'Ŗ' | 'Ř' => 'R',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'Ś' | 'Ŝ' | 'Ş' | 'Š' => 'S',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'Ţ' | 'Ť' | 'Ŧ' => 'T',
        'ţ' | 'ť' | 'ŧ' => 't',
        'Ù'..='Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => 'U',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'Ŵ' => 'W',
        'ŵ' => 'w',
        'Ý' | 'Ŷ' | 'Ÿ' => 'Y',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'Ź' | 'Ż' | 'Ž' => 'Z',
        'ź' | 'ż' | 'ž' => 'z',
        _ => return None,
    })
}

/// The Latin letter a Cyrillic or Greek letter (or a digit, or a bar) is
/// shaped like, before case folding (`I` and `l` look alike; `i` and `l` do
/// not).
fn latin_shape(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic.
        'А' => 'A',
        'а' => 'a',
        'В' => 'B',
        'С' | 'Ϲ' => 'C',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'Е' | 'Ё' => 'E',
        'е' | 'ё' => 'e',
        'Һ' => 'H',
        'һ' => 'h',
        'І' | 'Ї' | 'Ӏ' => 'l',
        'і' | 'ї' => 'i',
        'Ј' => 'J',
        'ј' => 'j',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'о' => 'o',
        'Р' => 'P',
        'р' => 'p',
        'ԛ' => 'q',
        'Ѕ' => 'S',
        'ѕ' => 's',
        'Т' => 'T',
        'Ԝ' => 'W',
        'ԝ' => 'w',
        'Х' => 'X',
        'х' => 'x',
        'У' | 'Ү' => 'Y',
        'у' | 'ү' => 'y',
        'ӏ' => 'l',
        // Greek.
        'Α' => 'A',
        'α' => 'a',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'l',
        'ι' => 'i',
        'Κ' => 'K',
        'κ' => 'k',
        'Μ' => 'M',
        'Ν' => 'N',
        'ν' => 'v',
        'Ο' => 'O',
        'ο' => 'o',
        'Ρ' => 'P',
        'ρ' => 'p',
        'Τ' => 'T',
        'Υ' => 'Y',
        'υ' => 'u',
        'Χ' => 'X',
        // Latin and digits.
        'I' | '1' | '|' | 'ǀ' => 'l',
        '0' => 'o',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_reader_could_mistake_share_a_skeleton() {
        for (a, b) in [
            ("alice", "Alice"),
            ("alice", "\u{430}lice"),   // Cyrillic a
            ("alice", "al\u{456}ce"),   // Cyrillic i
            ("alice", "a\u{200b}lice"), // zero-width space
            ("alice", "ali\u{301}ce"),  // combining acute
            ("alice", "alicé"),         // precomposed
            ("alice", "ＡＬＩＣＥ"),    // fullwidth
            ("alice", " alice "),       // spaces at the ends
            ("bob", "b0b"),
            ("bob", "\u{432}ob"), // Cyrillic ve, lower: not shaped like b
            ("Ilona", "llona"),
            ("Ivan", "ivan"),
            ("paul", "pau1"),
            ("modern", "modem"),
            ("wendy", "vvendy"),
            ("Olga", "\u{39f}lga"),                   // Greek Omicron
            ("kappa", "\u{3ba}appa"),                 // Greek kappa
            ("sam", "\u{455}am"),                     // Cyrillic dze
            ("pepe", "\u{440}\u{435}\u{440}\u{435}"), // all Cyrillic
        ] {
            let mistaken = look_alike(a, b);
            // Cyrillic lower ve (в) is shaped like a small capital B, which
            // a reader does not take for b.
            if b.starts_with('\u{432}') {
                assert!(!mistaken, "{a:?} / {}", reveal(b));
            } else {
                assert!(
                    mistaken,
                    "{a:?} / {}: {:?} {:?}",
                    reveal(b),
                    skeleton(a),
                    skeleton(b)
                );
            }
        }
    }

    #[test]
    fn different_names_stay_apart() {
        for (a, b) in [
            ("alice", "alicia"),
            ("ali", "all"),
            ("bob", "rob"),
            ("anna", "ana"),
            ("mike", "nike"),
            ("ivan", "lvan"),
        ] {
            assert!(!look_alike(a, b), "{a:?} / {b:?}: {:?}", skeleton(a));
        }
    }

    #[test]
    fn reveal_shows_what_is_not_plain_ascii() {
        assert_eq!(reveal("alice"), "alice");
        assert_eq!(reveal("\u{430}lice"), "\\u{430}lice");
        assert_eq!(reveal("a\u{200b}b"), "a\\u{200b}b");
        assert_eq!(reveal("Jo Ann"), "Jo Ann");
    }
}
