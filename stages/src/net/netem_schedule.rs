//! Impairment settings as people write them, and schedules of them.
//!
//! [`NetemSettings`] is what the `wzp-netem` proxy's flags say (`--loss 5
//! --burst 60 --delay 40 ...`); [`parse_schedule`] reads a list of timed
//! phases that change some of those settings:
//!
//! ```text
//! 10s:loss=0;10s:loss=20,burst=60ms;10s:rate=16
//! ```
//!
//! Phases are separated by `;`, each is `DURATION[:KEY=VALUE,...]`. A phase
//! starts from the base settings (the flags) and changes the keys it lists;
//! after the last phase, the last one holds. Keys: `loss`, `reorder`,
//! `duplicate` (percent, 0 to 100), `burst`, `delay`, `jitter` (durations:
//! `40ms`, `1.5s`, or a plain number of milliseconds) and `rate` (kbit/s, 0 =
//! unlimited).
//!
//! Schedules come from the command line: every malformed form is refused with
//! an error that names the phase, the part that is wrong and what to write.

use std::time::Duration;

use super::netem_core::{GeModel, ImpairParams};

/// The longest delay, jitter or burst a setting may ask for.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(60);
/// The highest rate a setting may ask for, kbit/s.
pub const MAX_RATE_KBPS: f64 = 10_000_000.0;

/// The keys a phase may set.
pub const KEYS: &[&str] = &[
    "loss",
    "burst",
    "delay",
    "jitter",
    "reorder",
    "duplicate",
    "rate",
    "queue",
];

/// Impairment settings in user units. Percentages are 0..=100.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetemSettings {
    /// Average loss, percent. With `burst`, the loss comes in bursts.
    pub loss: f64,
    /// Mean burst length; zero = independent loss.
    pub burst: Duration,
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder: f64,
    pub duplicate: f64,
    /// kbit/s; 0 = unlimited.
    pub rate: f64,
    /// How long the rate limit's queue holds a datagram before dropping
    /// it (`None`: 100 ms; zero: a policer, which drops what the rate
    /// cannot carry at once and queues nothing).
    pub queue: Option<Duration>,
}

/// One phase of a schedule: how long it lasts and what it changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Phase {
    pub duration: Duration,
    pub loss: Option<f64>,
    pub burst: Option<Duration>,
    pub delay: Option<Duration>,
    pub jitter: Option<Duration>,
    pub reorder: Option<f64>,
    pub duplicate: Option<f64>,
    pub rate: Option<f64>,
    pub queue: Option<Duration>,
}

/// Why a schedule or a setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the schedule is empty; write phases like `10s:loss=0;10s:loss=20`")]
    Empty,
    #[error("phase {index} is empty (two `;` in a row?); write `DURATION[:KEY=VALUE,...]` between the `;`")]
    EmptyPhase { index: usize },
    #[error("phase {index} `{phase}`: duration {got:?}: {reason}")]
    BadDuration {
        index: usize,
        phase: String,
        got: String,
        reason: String,
    },
    #[error("phase {index} `{phase}` has nothing after `:`; write `{duration}` alone to keep the base settings, or add KEY=VALUE")]
    NoSettings {
        index: usize,
        phase: String,
        duration: String,
    },
    #[error("phase {index} `{phase}`: {item:?} is not KEY=VALUE; separate settings with `,` (e.g. `10s:loss=5,delay=40ms`)")]
    NotKeyValue {
        index: usize,
        phase: String,
        item: String,
    },
    #[error("phase {index} `{phase}`: unknown key {key:?}; use one of {}", KEYS.join(", "))]
    UnknownKey {
        index: usize,
        phase: String,
        key: String,
    },
    #[error("phase {index} `{phase}`: {key} is set twice; set each key once per phase")]
    RepeatedKey {
        index: usize,
        phase: String,
        key: String,
    },
    #[error("phase {index} `{phase}`: {key}={value:?}: {reason}")]
    BadValue {
        index: usize,
        phase: String,
        key: String,
        value: String,
        reason: String,
    },
}

/// Shortens outside text quoted in an error.
fn shown(s: &str) -> String {
    const MAX: usize = 48;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// A percentage, 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| {
        format!(
            "expected a percentage from 0 to 100 (e.g. 5 or 0.5), got {:?}",
            shown(s)
        )
    })?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not a percentage from 0 to 100"));
    }
    Ok(v)
}

/// A delay, jitter or burst length: `40ms`, `1.5s`, or a plain number of
/// milliseconds; at most [`MAX_SETTING_DURATION`].
pub fn parse_setting_duration(s: &str) -> Result<Duration, String> {
    let d = wzp_engine::params::parse_duration(s).map_err(|_| {
        format!(
            "expected milliseconds (e.g. 40) or a duration like \"40ms\" or \"1.5s\", got {:?}",
            shown(s)
        )
    })?;
    if d > MAX_SETTING_DURATION {
        return Err(format!(
            "{:?} is longer than the {} s allowed",
            shown(s),
            MAX_SETTING_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// A rate in kbit/s; 0 = unlimited.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| {
        format!(
            "expected a rate in kbit/s (e.g. 16 or 64; 0 = unlimited), got {:?}",
            shown(s)
        )
    })?;
    if !(0.0..=MAX_RATE_KBPS).contains(&v) {
        return Err(format!(
            "{v} kbit/s is outside 0 to {MAX_RATE_KBPS} (0 = unlimited)"
        ));
    }
    Ok(v)
}

/// Parses a schedule: `DURATION[:KEY=VALUE,...]` phases separated by `;`
/// (a trailing `;` is allowed).
pub fn parse_schedule(text: &str) -> Result<Vec<Phase>, ScheduleError> {
    let body = text.trim();
    let body = body.strip_suffix(';').unwrap_or(body);
    if body.trim().is_empty() {
        return Err(ScheduleError::Empty);
    }
    let mut phases = Vec::new();
    for (i, raw) in body.split(';').enumerate() {
        let index = i + 1;
        let phase_text = raw.trim();
        if phase_text.is_empty() {
            return Err(ScheduleError::EmptyPhase { index });
        }
        let phase = shown(phase_text);
        let (dur_text, settings) = match phase_text.split_once(':') {
            Some((d, s)) => (d.trim(), Some(s.trim())),
            None => (phase_text, None),
        };
        let bad_duration = |reason: String| ScheduleError::BadDuration {
            index,
            phase: phase.clone(),
            got: shown(dur_text),
            reason,
        };
        let duration = wzp_engine::params::parse_duration(dur_text).map_err(|_| {
            bad_duration(
                "expected how long the phase lasts, like \"10s\", \"500ms\" or \"2m\"".into(),
            )
        })?;
        if duration.is_zero() {
            return Err(bad_duration("a phase must last longer than 0".into()));
        }
        let mut p = Phase {
            duration,
            ..Default::default()
        };
        if let Some(settings) = settings {
            if settings.is_empty() {
                return Err(ScheduleError::NoSettings {
                    index,
                    phase,
                    duration: shown(dur_text),
                });
            }
            for item in settings.split(',') {
                let item = item.trim();
                let Some((key, value)) = item.split_once('=') else {
                    return Err(ScheduleError::NotKeyValue {
                        index,
                        phase,
                        item: shown(item),
                    });
                };
                let (key, value) = (key.trim(), value.trim());
                let bad = |reason: String| ScheduleError::BadValue {
                    index,
                    phase: phase.clone(),
                    key: key.to_string(),
                    value: shown(value),
                    reason,
                };
                let repeated = match key {
                    "loss" => p.loss.replace(parse_percent(value).map_err(bad)?).is_some(),
                    "reorder" => p
                        .reorder
                        .replace(parse_percent(value).map_err(bad)?)
                        .is_some(),
                    "duplicate" => p
                        .duplicate
                        .replace(parse_percent(value).map_err(bad)?)
                        .is_some(),
                    "burst" => p
                        .burst
                        .replace(parse_setting_duration(value).map_err(bad)?)
                        .is_some(),
                    "delay" => p
                        .delay
                        .replace(parse_setting_duration(value).map_err(bad)?)
                        .is_some(),
                    "jitter" => p
                        .jitter
                        .replace(parse_setting_duration(value).map_err(bad)?)
                        .is_some(),
                    "rate" => p.rate.replace(parse_rate(value).map_err(bad)?).is_some(),
                    "queue" => p
                        .queue
                        .replace(parse_setting_duration(value).map_err(bad)?)
                        .is_some(),
                    _ => {
                        return Err(ScheduleError::UnknownKey {
                            index,
                            phase,
                            key: shown(key),
                        })
                    }
                };
                if repeated {
                    return Err(ScheduleError::RepeatedKey {
                        index,
                        phase,
                        key: key.to_string(),
                    });
                }
            }
        }
        phases.push(p);
    }
    Ok(phases)
}

impl NetemSettings {
    /// These settings with a phase's changes on top.
    pub fn with_phase(&self, p: &Phase) -> NetemSettings {
        NetemSettings {
            loss: p.loss.unwrap_or(self.loss),
            burst: p.burst.unwrap_or(self.burst),
            delay: p.delay.unwrap_or(self.delay),
            jitter: p.jitter.unwrap_or(self.jitter),
            reorder: p.reorder.unwrap_or(self.reorder),
            duplicate: p.duplicate.unwrap_or(self.duplicate),
            rate: p.rate.unwrap_or(self.rate),
            queue: p.queue.or(self.queue),
        }
    }

    /// The core's parameters, or why these settings cannot be used
    /// together. Bursts follow a continuous-time Gilbert-Elliott chain whose
    /// mean loss is `loss` (see [`GeModel::bursts`]).
    pub fn impair_params(&self) -> Result<ImpairParams, String> {
        let loss = self.loss / 100.0;
        let (loss, ge) = if self.burst.is_zero() || loss == 0.0 {
            (loss, GeModel::Off)
        } else {
            if loss >= 1.0 {
                return Err(
                    "loss 100 with a burst length leaves no gaps between bursts; use a loss below 100 or no burst"
                        .into(),
                );
            }
            (0.0, GeModel::bursts(loss, self.burst.as_nanos() as u64))
        };
        let rate_bps = (self.rate * 1000.0) as u64;
        Ok(ImpairParams {
            loss,
            ge,
            delay_ns: self.delay.as_nanos() as u64,
            jitter_ns: self.jitter.as_nanos() as u64,
            reorder: self.reorder / 100.0,
            duplicate: self.duplicate / 100.0,
            rate_bps,
            // Room for a few full-size datagrams, or 20 ms at the rate.
            rate_burst_bytes: (rate_bps / 8 / 50).max(3_000),
            rate_queue_ns: self
                .queue
                .map_or(ImpairParams::default().rate_queue_ns, |q| {
                    q.as_nanos() as u64
                }),
            ..ImpairParams::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_phases_and_applies_them_over_the_base() {
        let phases =
            parse_schedule(" 10s:loss=0 ; 2.5s: loss = 20 , burst=60ms ;500ms:rate=16;1m;")
                .unwrap();
        assert_eq!(phases.len(), 4);
        assert_eq!(phases[0].duration, Duration::from_secs(10));
        assert_eq!(phases[0].loss, Some(0.0));
        assert_eq!(phases[1].duration, Duration::from_millis(2500));
        assert_eq!(phases[1].burst, Some(Duration::from_millis(60)));
        assert_eq!(phases[2].rate, Some(16.0));
        assert_eq!(
            phases[3],
            Phase {
                duration: Duration::from_secs(60),
                ..Default::default()
            }
        );
        let base = NetemSettings {
            loss: 5.0,
            delay: Duration::from_millis(40),
            ..Default::default()
        };
        let s = base.with_phase(&phases[2]);
        assert_eq!(s.loss, 5.0, "unlisted keys keep the base value");
        assert_eq!(s.delay, Duration::from_millis(40));
        assert_eq!(s.rate, 16.0);
        assert_eq!(s.impair_params().unwrap().rate_bps, 16_000);
        assert_eq!(
            s.impair_params().unwrap().rate_queue_ns,
            100_000_000,
            "the queue's default"
        );
        let policer = parse_schedule("1s:rate=12,queue=0").unwrap();
        let q = base.with_phase(&policer[0]).impair_params().unwrap();
        assert_eq!((q.rate_bps, q.rate_queue_ns), (12_000, 0));
        let later = base
            .with_phase(&policer[0])
            .with_phase(&parse_schedule("1s:rate=16").unwrap()[0]);
        assert_eq!(
            later.queue,
            Some(Duration::ZERO),
            "kept from the phase before"
        );
        let b = base.with_phase(&phases[1]).impair_params().unwrap();
        assert_eq!(b.loss, 0.0, "burst loss replaces independent loss");
        assert!(matches!(
            b.ge,
            GeModel::PerTime {
                mean_bad_ns: 60_000_000,
                ..
            }
        ));
    }

    /// Every malformed form is refused, and the message names the bad part.
    #[test]
    fn bad_schedules_are_refused_with_the_bad_part_named() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["schedule is empty"]),
            ("  ;", &["schedule is empty"]),
            ("10s;;10s", &["phase 2 is empty"]),
            (";10s", &["phase 1 is empty"]),
            ("loss=5", &["phase 1", "duration \"loss=5\""]),
            ("10:loss=5;x:loss=1", &["phase 2", "duration \"x\""]),
            ("10q:loss=5", &["duration \"10q\""]),
            ("-1s:loss=5", &["duration \"-1s\""]),
            ("0s:loss=5", &["longer than 0"]),
            ("10s:", &["phase 1", "nothing after `:`", "`10s` alone"]),
            ("10s:loss", &["\"loss\" is not KEY=VALUE"]),
            (
                "10s:loss=5;5s:loss=1,,delay=3",
                &["phase 2", "\"\" is not KEY=VALUE"],
            ),
            ("10s:los=5", &["unknown key \"los\"", "loss, burst"]),
            ("10s:=5", &["unknown key \"\""]),
            ("10s:loss=5,loss=6", &["loss is set twice"]),
            ("10s:loss=101", &["loss=\"101\"", "not a percentage"]),
            ("10s:loss=-1", &["loss=\"-1\""]),
            ("10s:loss=NaN", &["loss=\"NaN\"", "percentage"]),
            ("10s:loss=5%", &["loss=\"5%\""]),
            ("10s:reorder=x", &["reorder=\"x\""]),
            ("10s:duplicate=200", &["duplicate=\"200\""]),
            ("10s:delay=fast", &["delay=\"fast\"", "milliseconds"]),
            ("10s:jitter=2h", &["jitter=\"2h\"", "longer than the 60 s"]),
            ("10s:burst=-5ms", &["burst=\"-5ms\""]),
            ("10s:rate=-1", &["rate=\"-1\"", "kbit/s"]),
            ("10s:rate=1e99", &["rate=\"1e99\""]),
            ("10s:rate=inf", &["rate=\"inf\""]),
            ("10s:loss=5:6", &["loss=\"5:6\""]),
        ];
        for (text, wants) in cases {
            let err = match parse_schedule(text) {
                Ok(p) => panic!("{text:?} should be refused, got {p:?}"),
                Err(e) => e.to_string(),
            };
            for want in *wants {
                assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            }
        }
        // Outside text is quoted short.
        let long = format!("10s:{}=1", "k".repeat(10_000));
        let err = parse_schedule(&long).unwrap_err().to_string();
        assert!(err.len() < 400, "{} bytes", err.len());
    }

    #[test]
    fn loss_100_in_bursts_is_refused() {
        let s = NetemSettings {
            loss: 100.0,
            burst: Duration::from_millis(50),
            ..Default::default()
        };
        assert!(s.impair_params().unwrap_err().contains("loss 100"));
        let s = NetemSettings {
            loss: 100.0,
            ..Default::default()
        };
        assert_eq!(s.impair_params().unwrap().loss, 1.0);
    }
}
