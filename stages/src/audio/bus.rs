//! `audio.bus_sink` and `audio.bus_source`: PCM from one running graph to
//! another in the same process, through a [`PcmBus`] the control plane
//! hands to both as a resource.
//!
//! Two graphs run on their own clocks (the same machine's timer, so the same
//! rate, but not in phase): the bus is a lock-free single-producer,
//! single-consumer ring. `wzp-client` joins two calls into one this way: the
//! graph with the microphone and speaker sends the other call's graph what
//! its party should hear, and takes back what that party says
//! (docs/DESIGN.md, decision 32).
//!
//! - `audio.bus_sink`: input `in` (`Pcm` at `rate`); param `bus` (the
//!   resource's name; empty: the input is discarded). A quantum that finds
//!   the ring full is dropped (counter `overruns`).
//! - `audio.bus_source`: output `out` (`Pcm` at `rate`); params `bus`
//!   (empty: silence) and `prefill` (default `"40ms"`, 0..=500ms): what
//!   the ring holds before the source plays from it, the cushion for the
//!   two clocks' phases. A quantum that finds less than a quantum queued is
//!   silence and the source waits for `prefill` again (counter
//!   `underruns`); audio queued beyond `prefill` plus 60 ms (the other
//!   graph stalled, then caught up) is dropped down to `prefill` (counter
//!   `skips`), so the delay through the bus stays bounded. Declared latency:
//!   `prefill`.
//!
//! Each bus has one writer and one reader: a second stage naming the same
//! bus fails at build.
//!
//! ```toml
//! [[stage]]
//! id = "conf_in"
//! kind = "audio.bus_source"
//! params = { bus = "conf.from_b", prefill = "40ms" }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec};

/// Most audio a bus source lets queue beyond its prefill before it drops
/// the excess.
const SLACK: Duration = Duration::from_millis(60);

/// A PCM ring between two graphs: one [`BusSink`] writes it, one
/// [`BusSource`] reads it. Each end is taken by the stage that builds it.
pub struct PcmBus {
    tx: Mutex<Option<rtrb::Producer<f32>>>,
    rx: Mutex<Option<rtrb::Consumer<f32>>>,
}

impl PcmBus {
    /// A bus holding at most `capacity` samples (at least one second at
    /// the rate it carries is plenty).
    pub fn new(capacity: usize) -> Arc<PcmBus> {
        let (tx, rx) = rtrb::RingBuffer::new(capacity.max(1));
        Arc::new(PcmBus {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
        })
    }

    fn take_tx(&self) -> Option<rtrb::Producer<f32>> {
        self.tx.lock().ok()?.take()
    }

    fn take_rx(&self) -> Option<rtrb::Consumer<f32>> {
        self.rx.lock().ok()?.take()
    }
}

/// The bus named by param `bus`: `None` for an empty name.
fn bus_of(cx: &BuildContext<'_>, p: &Params) -> Result<Option<(String, Arc<PcmBus>)>, BuildError> {
    let name = p.str("bus")?;
    if name.is_empty() {
        return Ok(None);
    }
    let bus = cx.resource::<PcmBus>(name).ok_or_else(|| {
        ParamError::new(
            "bus",
            format!(
                "no PCM bus named {name:?}: the control plane that runs two graphs together \
                 provides it (leave it empty outside one)"
            ),
        )
    })?;
    Ok(Some((name.to_string(), bus)))
}

fn bus_spec() -> ParamSpec {
    ParamSpec::str(
        "bus",
        "",
        "the PcmBus resource between two graphs (empty: none)",
    )
}

/// Factory of `audio.bus_sink`.
pub struct BusSink;

struct BusSinkProc {
    tx: Option<rtrb::Producer<f32>>,
    overruns: Counter,
}

impl Processor for BusSinkProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(tx) = self.tx.as_mut() else {
            return Flow::Continue;
        };
        let x = io.pcm_in(0);
        match tx.write_chunk_uninit(x.len()) {
            Ok(chunk) => {
                chunk.fill_from_iter(x.iter().copied());
            }
            Err(_) => self.overruns.inc(),
        }
        Flow::Continue
    }
}

impl StageFactory for BusSink {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.bus_sink",
            summary: "sends its input to another graph of the process through a PCM bus",
            inputs: vec![pcm_port("in", "the signal for the other graph")],
            outputs: vec![],
            params: vec![bus_spec(), rate_spec()],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let tx = match bus_of(cx, p)? {
            None => None,
            Some((name, bus)) => Some(bus.take_tx().ok_or_else(|| {
                ParamError::new(
                    "bus",
                    format!("bus {name:?} has a writer already: one audio.bus_sink per bus"),
                )
            })?),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(BusSinkProc {
                tx,
                overruns: cx.counter("overruns"),
            }),
        })
    }
}

/// Factory of `audio.bus_source`.
pub struct BusSource;

struct BusSourceProc {
    rx: Option<rtrb::Consumer<f32>>,
    /// Samples queued before playing.
    prefill: usize,
    /// Most samples queued before the excess is dropped.
    most: usize,
    playing: bool,
    underruns: Counter,
    skips: Counter,
}

impl Processor for BusSourceProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let out = io.pcm_out(0);
        let Some(rx) = self.rx.as_mut() else {
            out.fill(0.0);
            return Flow::Continue;
        };
        let n = out.len();
        let queued = rx.slots();
        if !self.playing {
            if queued < self.prefill + n {
                out.fill(0.0);
                return Flow::Continue;
            }
            self.playing = true;
        }
        if queued < n {
            out.fill(0.0);
            self.playing = false;
            self.underruns.inc();
            return Flow::Continue;
        }
        if queued > self.most + n {
            let drop = queued - self.prefill - n;
            if let Ok(chunk) = rx.read_chunk(drop) {
                chunk.commit_all();
            }
            self.skips.inc();
        }
        match rx.read_chunk(n) {
            Ok(chunk) => {
                let (a, b) = chunk.as_slices();
                out[..a.len()].copy_from_slice(a);
                out[a.len()..a.len() + b.len()].copy_from_slice(b);
                chunk.commit_all();
            }
            Err(_) => out.fill(0.0),
        }
        Flow::Continue
    }
}

impl StageFactory for BusSource {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.bus_source",
            summary: "plays what another graph of the process sends through a PCM bus",
            inputs: vec![],
            outputs: vec![pcm_port("out", "the other graph's signal, or silence")],
            params: vec![
                bus_spec(),
                ParamSpec::duration(
                    "prefill",
                    Duration::from_millis(40),
                    "audio queued before it plays (0..=500ms): the cushion for the two graphs' clocks",
                ),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let prefill = p.duration("prefill")?;
        if prefill > Duration::from_millis(500) {
            return Err(ParamError::new(
                "prefill",
                format!("{prefill:?} is above 500ms; the bus would add that much delay"),
            )
            .into());
        }
        let at = |d: Duration| (d.as_nanos() * u128::from(rate) / 1_000_000_000) as usize;
        let rx = match bus_of(cx, p)? {
            None => None,
            Some((name, bus)) => Some(bus.take_rx().ok_or_else(|| {
                ParamError::new(
                    "bus",
                    format!("bus {name:?} has a reader already: one audio.bus_source per bus"),
                )
            })?),
        };
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: if rx.is_some() {
                prefill
            } else {
                Duration::ZERO
            },
            processor: Box::new(BusSourceProc {
                rx,
                prefill: at(prefill),
                most: at(prefill + SLACK),
                playing: false,
                underruns: cx.counter("underruns"),
                skips: cx.counter("skips"),
            }),
        })
    }
}
