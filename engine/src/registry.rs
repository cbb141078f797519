//! Maps kind strings (`family.name`) to stage factories.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stage::{StageFactory, StageInfo};

/// The stage kinds a binary knows. Binaries fill it (`wzp_stages::register_all`),
/// and may add their own kinds; the engine itself registers none.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn StageFactory>>,
}

/// A kind was registered twice.
#[derive(Debug, thiserror::Error)]
#[error("stage kind `{0}` is already registered")]
pub struct DuplicateKind(pub String);

/// A kind string that is not `family.name` in lower snake case.
#[derive(Debug, thiserror::Error)]
#[error("stage kind `{0}` is not of the form `family.name` (lower case, digits, `_`)")]
pub struct BadKindName(pub String);

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory under the kind its `info()` names.
    pub fn register(&mut self, factory: impl StageFactory) -> Result<(), RegisterError> {
        let kind = factory.info().kind;
        if !valid_kind(kind) {
            return Err(RegisterError::BadName(BadKindName(kind.into())));
        }
        if self.factories.contains_key(kind) {
            return Err(RegisterError::Duplicate(DuplicateKind(kind.into())));
        }
        self.factories.insert(kind, Arc::new(factory));
        Ok(())
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StageFactory>> {
        self.factories.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    pub fn infos(&self) -> Vec<StageInfo> {
        self.factories.values().map(|f| f.info()).collect()
    }

    pub fn len(&self) -> usize {
        self.factories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.factories.is_empty()
    }
}

/// Why a factory could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Duplicate(#[from] DuplicateKind),
    #[error(transparent)]
    BadName(#[from] BadKindName),
}

fn valid_kind(kind: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && s.starts_with(|c: char| c.is_ascii_lowercase())
    };
    matches!(kind.split_once('.'), Some((family, name)) if ok(family) && ok(name))
}

#[cfg(test)]
mod tests {
    use super::valid_kind;

    #[test]
    fn kind_names() {
        assert!(valid_kind("audio.gain"));
        assert!(valid_kind("codec.opus_encode"));
        for bad in [
            "gain",
            "Audio.gain",
            "audio.",
            ".gain",
            "audio.gain.x",
            "audio.ga-in",
            "1a.b",
        ] {
            assert!(!valid_kind(bad), "{bad}");
        }
    }
}
