//! Stage parameters: declared by each factory, validated by the engine before
//! the factory runs, read by the factory with typed getters.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The type a parameter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Bool,
    Int,
    /// A number; integers are accepted too.
    Float,
    Str,
    /// `"20ms"`, `"1.5s"`, `"2m"`, or a bare number of milliseconds.
    Duration,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Bool => "boolean",
            ParamType::Int => "integer",
            ParamType::Float => "number",
            ParamType::Str => "string",
            ParamType::Duration => "duration (e.g. \"20ms\")",
        })
    }
}

/// A value a parameter holds after validation.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Duration(Duration),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => write!(f, "{s:?}"),
            ParamValue::Duration(d) => write!(f, "\"{}\"", format_duration(*d)),
        }
    }
}

/// Declaration of one parameter of a stage kind.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// `None`: the parameter is required.
    pub default: Option<ParamValue>,
    pub doc: &'static str,
}

impl ParamSpec {
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            doc,
        }
    }

    pub fn float(name: &'static str, default: f64, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Float,
            default: Some(ParamValue::Float(default)),
            doc,
        }
    }

    pub fn int(name: &'static str, default: i64, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Int,
            default: Some(ParamValue::Int(default)),
            doc,
        }
    }

    pub fn bool(name: &'static str, default: bool, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Bool,
            default: Some(ParamValue::Bool(default)),
            doc,
        }
    }

    pub fn str(name: &'static str, default: &str, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Str,
            default: Some(ParamValue::Str(default.to_string())),
            doc,
        }
    }

    pub fn duration(name: &'static str, default: Duration, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Duration,
            default: Some(ParamValue::Duration(default)),
            doc,
        }
    }
}

/// Converts a raw TOML value to the declared type, or says what was wrong.
pub fn coerce(ty: ParamType, value: &toml::Value) -> Result<ParamValue, String> {
    match (ty, value) {
        (ParamType::Bool, toml::Value::Boolean(b)) => Ok(ParamValue::Bool(*b)),
        (ParamType::Int, toml::Value::Integer(i)) => Ok(ParamValue::Int(*i)),
        (ParamType::Float, toml::Value::Float(x)) => Ok(ParamValue::Float(*x)),
        (ParamType::Float, toml::Value::Integer(i)) => Ok(ParamValue::Float(*i as f64)),
        (ParamType::Str, toml::Value::String(s)) => Ok(ParamValue::Str(s.clone())),
        (ParamType::Duration, toml::Value::String(s)) => {
            parse_duration(s).map(ParamValue::Duration)
        }
        (ParamType::Duration, toml::Value::Integer(i)) if *i >= 0 => {
            Ok(ParamValue::Duration(Duration::from_millis(*i as u64)))
        }
        // Placeholders always substitute as strings: accept "3", "true", "0.5".
        (ParamType::Int, toml::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(ParamValue::Int)
            .map_err(|_| format!("expected an integer, got {s:?}")),
        (ParamType::Float, toml::Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(ParamValue::Float)
            .map_err(|_| format!("expected a number, got {s:?}")),
        (ParamType::Bool, toml::Value::String(s)) => match s.trim() {
            "true" | "on" | "yes" | "1" => Ok(ParamValue::Bool(true)),
            "false" | "off" | "no" | "0" => Ok(ParamValue::Bool(false)),
            _ => Err(format!("expected a boolean, got {s:?}")),
        },
        (ty, v) => {
            let ty = ty.to_string();
            let article = if ty.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            Err(format!(
                "expected {article} {ty}, got {} `{v}`",
                v.type_str()
            ))
        }
    }
}

/// A number as a person reads it: `1e300`, not three hundred digits.
fn short_f64(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// As [`parse_duration`] for a command-line flag: the unit is required
/// (`--duration 5` read as 5 ms stopped a run after one frame, exit 0), but
/// for a bare `0`.
pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t != "0" && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{s:?} has no unit; give one, e.g. \"{t}s\" or \"{t}ms\""
        ));
    }
    parse_duration(s)
}

/// Parses `"20ms"`, `"1.5s"`, `"2m"`, `"250us"`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("expected a duration like \"20ms\", \"5s\" or \"2m\", got {s:?}");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0ms".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// A stage's validated parameters, defaults filled in.
#[derive(Clone, Debug, Default)]
pub struct Params {
    values: BTreeMap<String, ParamValue>,
}

/// A parameter's value was of the right type but not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        ParamError {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

impl Params {
    /// Builds parameters directly (for code that builds stages without TOML).
    pub fn from_values(values: impl IntoIterator<Item = (String, ParamValue)>) -> Self {
        Params {
            values: values.into_iter().collect(),
        }
    }

    pub fn insert(&mut self, name: &str, value: ParamValue) {
        self.values.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn missing(name: &str) -> ParamError {
        ParamError::new(
            name,
            "not set (the stage did not declare it, or it was not validated)",
        )
    }

    pub fn bool(&self, name: &str) -> Result<bool, ParamError> {
        match self.get(name) {
            Some(ParamValue::Bool(b)) => Ok(*b),
            _ => Err(Self::missing(name)),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, ParamError> {
        match self.get(name) {
            Some(ParamValue::Int(i)) => Ok(*i),
            _ => Err(Self::missing(name)),
        }
    }

    pub fn float(&self, name: &str) -> Result<f64, ParamError> {
        match self.get(name) {
            Some(ParamValue::Float(x)) => Ok(*x),
            Some(ParamValue::Int(i)) => Ok(*i as f64),
            _ => Err(Self::missing(name)),
        }
    }

    pub fn str(&self, name: &str) -> Result<&str, ParamError> {
        match self.get(name) {
            Some(ParamValue::Str(s)) => Ok(s),
            _ => Err(Self::missing(name)),
        }
    }

    pub fn duration(&self, name: &str) -> Result<Duration, ParamError> {
        match self.get(name) {
            Some(ParamValue::Duration(d)) => Ok(*d),
            _ => Err(Self::missing(name)),
        }
    }

    /// An integer within `lo..=hi`.
    pub fn int_in(&self, name: &str, lo: i64, hi: i64) -> Result<i64, ParamError> {
        let v = self.int(name)?;
        if v < lo || v > hi {
            return Err(ParamError::new(
                name,
                format!("{v} is out of range; use {lo}..={hi}"),
            ));
        }
        Ok(v)
    }

    /// A number within `lo..=hi`.
    pub fn float_in(&self, name: &str, lo: f64, hi: f64) -> Result<f64, ParamError> {
        let v = self.float(name)?;
        if !(v >= lo && v <= hi) {
            return Err(ParamError::new(
                name,
                format!("{} is out of range; use {lo}..={hi}", short_f64(v)),
            ));
        }
        Ok(v)
    }

    /// A string that must be one of `choices`.
    pub fn choice<'a>(&'a self, name: &str, choices: &[&str]) -> Result<&'a str, ParamError> {
        let v = self.str(name)?;
        if choices.contains(&v) {
            Ok(v)
        } else {
            Err(ParamError::new(
                name,
                format!("{v:?} is not one of: {}", choices.join(", ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("40").unwrap(), Duration::from_millis(40));
        for bad in ["", "ms", "5 parsecs", "-1s", "1e999s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(format_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn a_flag_needs_a_unit() {
        assert_eq!(parse_duration_flag("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration_flag("0").unwrap(), Duration::ZERO);
        for bad in ["5", "1.5", " 10 "] {
            let e = parse_duration_flag(bad).unwrap_err();
            assert!(e.contains("has no unit"), "{bad:?}: {e}");
        }
        assert!(parse_duration_flag("-1s").is_err());
    }

    #[test]
    fn out_of_range_numbers_are_shown_short() {
        assert_eq!(short_f64(1e300), "1e300");
        assert_eq!(short_f64(5e-324), "5e-324");
        assert_eq!(short_f64(440.5), "440.5");
        assert_eq!(short_f64(0.0), "0");
        assert_eq!(short_f64(f64::NAN), "NaN");
    }

    #[test]
    fn type_errors_read_as_english() {
        let e = coerce(ParamType::Int, &toml::Value::Float(1.5)).unwrap_err();
        assert!(e.contains("expected an integer"), "{e}");
    }

    #[test]
    fn coercion_table() {
        use toml::Value as V;
        let ok: &[(ParamType, V, ParamValue)] = &[
            (ParamType::Float, V::Integer(3), ParamValue::Float(3.0)),
            (ParamType::Int, V::String("7".into()), ParamValue::Int(7)),
            (
                ParamType::Bool,
                V::String("on".into()),
                ParamValue::Bool(true),
            ),
            (
                ParamType::Duration,
                V::String("5s".into()),
                ParamValue::Duration(Duration::from_secs(5)),
            ),
        ];
        for (ty, v, want) in ok {
            assert_eq!(&coerce(*ty, v).unwrap(), want);
        }
        let bad: &[(ParamType, V)] = &[
            (ParamType::Int, V::Float(1.5)),
            (ParamType::Int, V::String("x".into())),
            (ParamType::Str, V::Integer(1)),
            (ParamType::Bool, V::String("maybe".into())),
            (ParamType::Duration, V::Integer(-5)),
        ];
        for (ty, v) in bad {
            assert!(coerce(*ty, v).is_err(), "{ty:?} from {v:?} should fail");
        }
    }
}
