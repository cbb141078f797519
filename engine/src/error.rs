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

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    let limit = (word.chars().count().max(3) / 3).max(2);
    (d <= limit).then_some(c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
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
