//! Pass 1: stage ids are snake_case and unique.

use std::collections::HashMap;

use super::Diagnostics;
use crate::error::ErrorKind;
use crate::spec::{GraphSpec, Loc};

/// Reports every stage id that is not snake_case or is used twice. The
/// stages are still built, so their own mistakes are reported too.
pub(super) fn check_ids(spec: &GraphSpec, diag: &mut Diagnostics) {
    let mut seen: HashMap<&str, Loc> = HashMap::new();
    for st in &spec.stages {
        if !valid_id(&st.id) {
            diag.push(
                diag.error(
                    ErrorKind::DuplicateId,
                    st.loc,
                    format!("stage id {:?} is not snake_case", st.id),
                )
                .help("use lower-case letters, digits and `_`, starting with a letter"),
            );
        }
        if let Some(first) = seen.insert(&st.id, st.loc) {
            diag.push(
                diag.error(
                    ErrorKind::DuplicateId,
                    st.loc,
                    format!("duplicate stage id `{}`", st.id),
                )
                .stage(&st.id)
                .help(format!(
                    "the id is first used at line {}; give each stage its own id",
                    first.line
                )),
            );
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn ids_are_snake_case_starting_with_a_letter() {
        for id in ["a", "mic", "opus_enc", "tx2", "a_b_c_1"] {
            assert!(valid_id(id), "{id:?} should be valid");
        }
        for id in ["", "Mic", "2tx", "_a", "a-b", "a.b", "a b", "~bridge", "é"] {
            assert!(!valid_id(id), "{id:?} should be refused");
        }
    }
}
