//! Graph errors: each says what is wrong, where (file:line, stage id), and
//! what to do about it.

use std::fmt;

/// What kind of mistake a graph has. Tests match on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is not valid TOML, or has a field the schema does not know.
    Syntax,
    /// A `[graph]` value (clock driver, quantum, rate, batch capacity) is
    /// out of range, or a port rate does not fit the quantum. A missing
    /// `[graph]` table is a [`ErrorKind::Syntax`] error.
    BadHeader,
    UnknownKind,
    UnknownPort,
    TypeMismatch,
    Cycle,
    MissingParam,
    BadParam,
    UnknownParam,
    DuplicateId,
    UnconnectedInput,
    UnsetPlaceholder,
    /// A `--set NAME=VALUE` names a placeholder the graph does not have.
    UnknownPlaceholder,
    /// A link's endpoint is not written `stage.port`, or an input has two links.
    BadLink,
    BadDomain,
    /// The factory refused to build the stage.
    Build,
    /// The graph file could not be read.
    Io,
}

/// An error in a graph, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    pub kind: ErrorKind,
    /// The graph file (or `<memory>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The stage the error is about, when there is one.
    pub stage: Option<String>,
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl GraphError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GraphError {
            kind,
            file: "<memory>".into(),
            line: None,
            stage: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn at(mut self, file: &str, line: Option<usize>) -> Self {
        self.file = file.to_string();
        self.line = line;
        self
    }

    pub fn stage(mut self, id: &str) -> Self {
        self.stage = Some(id.to_string());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(stage) = &self.stage {
            write!(f, "stage `{stage}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphError {}

/// Several errors found in one pass, so a user fixes them all at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphErrors(pub Vec<GraphError>);

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            // The caller prints the first `error: `; later ones get their own.
            if i > 0 {
                write!(f, "\nerror: ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphErrors {}

impl From<GraphError> for GraphErrors {
    fn from(e: GraphError) -> Self {
        GraphErrors(vec![e])
    }
}

impl GraphErrors {
    pub fn kinds(&self) -> Vec<ErrorKind> {
        self.0.iter().map(|e| e.kind).collect()
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo
/// (the first of the closest on a tie).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let a: Vec<char> = word.chars().collect();
    let limit = (a.len().max(3) / 3).max(2);
    let mut rows = (Vec::new(), Vec::new());
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // Only a closer one can replace the best so far.
        let bound = best.map_or(limit, |(d, _)| d.saturating_sub(1));
        if best.is_some_and(|(d, _)| d == 0) {
            break;
        }
        if let Some(d) = levenshtein_within(&a, c, bound, &mut rows) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The edit distance from `a` to `b` when it is at most `bound`; `None`
/// as soon as it cannot be (a graph with thousands of misspelled names
/// took seconds to report with the full distance to every candidate).
fn levenshtein_within(
    a: &[char],
    b: &str,
    bound: usize,
    (prev, cur): &mut (Vec<usize>, Vec<usize>),
) -> Option<usize> {
    let m = b.chars().count();
    if m.abs_diff(a.len()) > bound {
        return None;
    }
    prev.clear();
    prev.extend(0..=m);
    cur.clear();
    cur.resize(m + 1, 0);
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, cb) in b.chars().enumerate() {
            let sub = prev[j] + usize::from(*ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        if row_min > bound {
            return None;
        }
        std::mem::swap(prev, cur);
    }
    (prev[m] <= bound).then_some(prev[m])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let kinds = ["audio.gain", "audio.mix", "codec.opus_encode"];
        assert_eq!(did_you_mean("audio.gian", kinds), Some("audio.gain"));
        assert_eq!(
            did_you_mean("codec.opus_encod", kinds),
            Some("codec.opus_encode")
        );
        assert_eq!(did_you_mean("net.quic_egress", kinds), None);
        // The first of the closest on a tie; an exact match wins.
        assert_eq!(did_you_mean("ab", ["ax", "ay"]), Some("ax"));
        assert_eq!(did_you_mean("ay", ["ax", "ay"]), Some("ay"));
        assert_eq!(did_you_mean("", ["ab"]), Some("ab"));
        assert_eq!(did_you_mean("abc", []), None);
    }

    /// The bounded distance agrees with the full one wherever it answers.
    #[test]
    fn bounded_distance_matches_the_full_one() {
        fn full(a: &str, b: &str) -> usize {
            let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            let mut d: Vec<Vec<usize>> = (0..=a.len()).map(|i| vec![i; b.len() + 1]).collect();
            for (j, v) in d[0].iter_mut().enumerate() {
                *v = j;
            }
            for i in 1..=a.len() {
                for j in 1..=b.len() {
                    d[i][j] = (d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]))
                        .min(d[i - 1][j] + 1)
                        .min(d[i][j - 1] + 1);
                }
            }
            d[a.len()][b.len()]
        }
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "kitten",
            "sitting",
            "fec_ratio",
            "fec_raito",
            "ärger",
            "arger",
        ];
        let mut rows = (Vec::new(), Vec::new());
        for x in words {
            for y in words {
                let a: Vec<char> = x.chars().collect();
                let f = full(x, y);
                for bound in 0..8 {
                    let got = levenshtein_within(&a, y, bound, &mut rows);
                    assert_eq!(got, (f <= bound).then_some(f), "{x:?} {y:?} bound {bound}");
                }
            }
        }
    }

    #[test]
    fn display_names_file_line_stage_and_help() {
        let e = GraphError::new(ErrorKind::UnknownKind, "unknown kind `x`")
            .at("g.toml", Some(7))
            .stage("enc")
            .help("run `wzp-client stages`");
        assert_eq!(
            e.to_string(),
            "g.toml:7: stage `enc`: unknown kind `x`\n  help: run `wzp-client stages`"
        );
    }
}
