//! `wzp-client message WHO`: leave a voice message for a person who is
//! away; `wzp-client messages`: fetch the ones left for you.
//!
//! A message is Opus at 16 kb/s in 20 ms frames, sealed end to end to the
//! person's message key (`wzp_proto::voice_message`), which their relay
//! hands out signed by their identity: the relay keeps the message and
//! cannot read it. The person fetches it from the relay they register at,
//! checks who signed it, and gets a WAV file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::signal::{SignalMessage, FEATURE_VOICE_MESSAGES};
use wzp_proto::voice_message::{
    self, MessageKey, MAX_FRAMES, MAX_MESSAGE_PARTS, MAX_SEALED_MESSAGE, MESSAGE_PART_LEN,
};
use wzp_proto::Fingerprint;

use super::direct::RelayArgs;
use crate::contacts::Contacts;
use crate::signal::{MappingTest, SignalConn};

pub const MESSAGE_EXAMPLES: &str = "\
Examples:
  wzp-client message alice --relay 203.0.113.7:4433
      Record a voice message from the microphone (Ctrl-C ends it, at most
      --duration, 30 s by default) and leave it for your contact alice.
      Your relay finds her mailbox (the relay she was on last, it or one
      it federates with) and it is kept there; only she can open it; she
      fetches it with `wzp-client messages`.
  wzp-client message 3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b --relay 203.0.113.7:4433 --input note.wav
      Leave a WAV file (any rate; up to 120 s) for a fingerprint.
  wzp-client call alice --relay 203.0.113.7:4433 --leave-message
      Call, and leave a message from the microphone if she does not answer.

The person must have registered (with `listen`, `call` or `messages`) at
that relay or one of its mesh since it last started: a relay keeps their
message key. If they register on another relay of the mesh later, the
message follows them there.

Exit status: 0 left; 1 an error (no key for the person there, the relay
keeps no voice messages, their mailbox is full, ...).";

pub const MESSAGES_EXAMPLES: &str = "\
Examples:
  wzp-client messages --relay 203.0.113.7:4433
      Fetch the voice messages left for you, check who left each (the
      sender's signature), save each as a WAV in ~/.wzp/messages, and
      delete them from the relay.
  wzp-client messages --relay 203.0.113.7:4433 --save-dir . --keep
      Save them here and leave them on the relay.
  wzp-client messages --relay 203.0.113.7:4433 --play
      Play each on the speaker as it is saved (Ctrl-C ends the one playing).

`listen` says when messages wait for you.";

/// Bit rate of a voice message.
pub const MESSAGE_BITRATE: i32 = 16_000;
/// How long to wait for the relay's answers.
const ANSWER: Duration = Duration::from_secs(15);
const RATE: u32 = 48_000;
/// The most messages one fetch may bring (a relay's mailbox holds 10).
const MAX_FETCHED: usize = 64;
const FRAME: usize = 960;

#[derive(clap::Args)]
pub struct MessageArgs {
    /// Whom: a fingerprint, or a contact's name.
    #[arg(value_name = "WHO")]
    pub who: String,
    /// What to say: `mic` (the default device), `mic:NAME`, a WAV file,
    /// `tone`, `tone:FREQ` or `builtin` (the built-in speech-like sample).
    #[arg(long, default_value = "mic")]
    pub input: String,
    /// The longest message, e.g. `30s` (at most 120 s); a WAV file longer
    /// than this is cut.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration_arg)]
    pub duration: Duration,
    /// Contacts file. Default ~/.wzp/contacts.toml.
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub history: super::history::HistoryArgs,
}

#[derive(clap::Args)]
pub struct MessagesArgs {
    /// Where to save them. Default ~/.wzp/messages.
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
    /// Leave them on the relay after saving them.
    #[arg(long)]
    pub keep: bool,
    /// Play each one as it is saved, on `speaker` (the default device) or
    /// `speaker:NAME` (`wzp-client devices` lists them).
    #[arg(long, value_name = "SPEAKER", num_args = 0..=1, default_missing_value = "speaker")]
    pub play: Option<String>,
    /// Contacts file (to name who left each). Default ~/.wzp/contacts.toml.
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub history: super::history::HistoryArgs,
}

/// `wzp-client message`.
pub fn message_cmd(args: MessageArgs) -> Result<()> {
    let max = Duration::from_secs((MAX_FRAMES / 50) as u64);
    if args.duration.is_zero() || args.duration > max {
        bail!(
            "--duration {:?}: a voice message is 1 ms..={} s",
            args.duration,
            max.as_secs()
        );
    }
    let contacts_path = super::contacts::contacts_path(args.contacts.clone())?;
    let contacts = Contacts::load(&contacts_path)?;
    let (target, contact) = contacts.resolve(&args.who)?;
    let who = contact.map_or(target.to_string(), |c| c.name.clone());
    let relay = args.relay.options()?;
    let identity = relay.identity()?;
    if target == identity.fingerprint() {
        bail!("{target} is your own fingerprint: leave a message for someone else");
    }
    let history = args.history.open()?;
    let rt = runtime()?;
    // Whether the message can be left at all, before anyone speaks into
    // the microphone (a file or a tone is read at once, and the relays are
    // asked once, as it is left).
    if crate::call::graph::microphone(&args.input).is_some() {
        rt.block_on(async {
            let mut sig = open(&relay, &identity).await?;
            let key = key_of(&mut sig, &target, &who, &relay.relay).await;
            sig.close().await;
            key.map(drop)
        })?;
    }
    let pcm = capture(&args.input, args.duration)?;
    let frames = encode(&pcm)?;
    rt.block_on(deliver(&relay, &identity, target, &who, &frames, &history))
}

/// `target`'s message key from the relay on `sig` (it asks the mesh),
/// checked to be theirs; an error says why there is none.
pub(super) async fn key_of(
    sig: &mut SignalConn,
    target: &Fingerprint,
    who: &str,
    relay: &str,
) -> Result<MessageKey> {
    sig.send(&SignalMessage::MessageKeyQuery {
        fingerprint: *target,
    })
    .await?;
    let key = answer(sig, "message_key_query", |m| match m {
        SignalMessage::MessageKey { fingerprint, key } if fingerprint == target => {
            Some(key.as_deref().copied())
        }
        _ => None,
    })
    .await?;
    let Some(key) = key else {
        bail!(
            "{who} has no message key at {relay} or any relay it federates with: they have not \
             registered on one since it started, so a message would not reach them; leave it \
             through a relay of the mesh they listen at"
        );
    };
    check_key(&key, target)?;
    Ok(key)
}

/// Leaves `frames` (Opus, 20 ms each) for `target` through `relay` on a
/// connection of its own: seals them to the key the relay hands out, sends
/// the parts, waits until it is kept, and records it in `history`.
pub(super) async fn deliver(
    relay: &crate::signal::RelayOptions,
    identity: &wzp_proto::Identity,
    target: Fingerprint,
    who: &str,
    frames: &[Vec<u8>],
    history: &crate::history::History,
) -> Result<()> {
    let secs = frames.len() as f64 / 50.0;
    let mut sig = open(relay, identity).await?;
    let key = key_of(&mut sig, &target, who, &relay.relay).await?;
    let mut eph = [0u8; 32];
    getrandom::fill(&mut eph).map_err(|e| anyhow!("no randomness: {e}"))?;
    let sealed =
        voice_message::seal(identity, &key, unix_ms(), frames, eph).map_err(|e| anyhow!("{e}"))?;
    let id = random_id()?;
    let parts: Vec<&[u8]> = voice_message::parts(&sealed).collect();
    for (i, p) in parts.iter().enumerate() {
        sig.send(&SignalMessage::VoiceMessage {
            id: id.clone(),
            to: Some(target),
            from: None,
            age_ms: None,
            part: i as u32,
            parts: parts.len() as u32,
            data: p.to_vec(),
        })
        .await?;
    }
    answer(&mut sig, "voice_message", |m| match m {
        SignalMessage::VoiceMessageStored { id: got } if *got == id => Some(()),
        _ => None,
    })
    .await?;
    history.record(&crate::history::Entry {
        at: crate::history::now(),
        dir: crate::history::Dir::Out,
        peer: target,
        alias: None,
        outcome: crate::history::Outcome::VoiceMessage,
        secs: secs.round() as u64,
    });
    println!(
        "left a voice message of {secs:.1} s for {who} at {} ({} bytes sealed; only {who} can open it)",
        relay.relay,
        sealed.len()
    );
    sig.close().await;
    Ok(())
}

/// `wzp-client messages`.
pub fn messages_cmd(args: MessagesArgs) -> Result<()> {
    let contacts_path = super::contacts::contacts_path(args.contacts.clone())?;
    let contacts = Contacts::load(&contacts_path)?;
    let play = match args.play.as_deref() {
        Some(out) => Some(
            crate::call::graph::speaker(out)
                .ok_or_else(|| anyhow!("--play {out}: expected speaker or speaker:NAME"))?
                .to_string(),
        ),
        None => None,
    };
    let dir = crate::trust::or_home(args.save_dir.clone(), "messages")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let relay = args.relay.options()?;
    let identity = relay.identity()?;
    let history = args.history.open()?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut sig = open(&relay, &identity).await?;
        sig.send(&SignalMessage::FetchVoiceMessages).await?;
        let got = fetch(&mut sig).await?;
        if got.is_empty() {
            println!("no voice messages for you at {}", relay.relay);
        }
        // Saved (as a WAV, or its sealed bytes): may leave the relay.
        let mut done: Vec<(String, Fingerprint)> = Vec::new();
        for m in &got {
            match voice_message::open(&identity, &m.sealed) {
                Ok(v) => {
                    let name = contacts.by_fingerprint(&v.sender).map(|c| c.name.clone());
                    if m.from != v.sender {
                        println!(
                            "warning: the relay says message {} is from {}, but {} signed it; it is {}'s",
                            m.id, m.from, v.sender, v.sender
                        );
                    }
                    let pcm = decode(&v.frames)?;
                    let who = name
                        .as_deref()
                        .map(file_word)
                        .unwrap_or_else(|| v.sender.to_string().replace(':', ""));
                    let path = save_new(
                        &dir.join(format!("voice-{}-{who}.wav", stamp(v.sent_at_ms))),
                        |p| write_wav(p, &pcm),
                    )?;
                    println!(
                        "voice message from {}, {:.1} s, left {} ago: saved to {}",
                        name.map_or(v.sender.to_string(), |n| format!("{n} ({})", v.sender)),
                        v.duration_ms() as f64 / 1000.0,
                        ago(m.age_ms),
                        path.display()
                    );
                    history.record(&crate::history::Entry {
                        at: (v.sent_at_ms / 1000).min(crate::history::now()),
                        dir: crate::history::Dir::In,
                        peer: v.sender,
                        alias: None,
                        outcome: crate::history::Outcome::VoiceMessage,
                        secs: v.duration_ms().div_ceil(1000),
                    });
                    done.push((m.id.clone(), m.from));
                    if let Some(device) = &play {
                        let sink = format!(
                            "kind = \"audio.device_playout\"\nparams = {{ rate = 48000, device = {device:?} }}"
                        );
                        if let Err(e) = play_wav(&path, &sink) {
                            println!("cannot play it: {e:#}");
                        }
                    }
                }
                // Sealed by a newer client: one that knows its form opens it.
                Err(voice_message::VoiceMessageError::Malformed("unknown version")) => {
                    println!(
                        "a voice message ({}) in a newer form than this wzp-client reads: left on the relay for a newer one",
                        m.id
                    );
                }
                Err(e) => {
                    // It can never open here; its bytes are kept, as they came.
                    let path = save_new(
                        &dir.join(format!("voice-{}.sealed", file_word(&m.id))),
                        |p| {
                            let mut f = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(p)?;
                            std::io::Write::write_all(&mut f, &m.sealed)
                                .with_context(|| format!("writing {}", p.display()))
                        },
                    )?;
                    println!(
                        "a voice message ({}) from {} that cannot be opened: {e}; its sealed bytes are in {}",
                        m.id,
                        m.from,
                        path.display()
                    );
                    done.push((m.id.clone(), m.from));
                }
            }
        }
        if !args.keep && !done.is_empty() {
            for (id, from) in &done {
                sig.send(&SignalMessage::DeleteVoiceMessage {
                    id: id.clone(),
                    from: Some(*from),
                })
                .await?;
            }
            // The relay's count after the last delete says they went.
            let left = got.len() - done.len();
            let _ = answer(&mut sig, "delete_voice_message", |m| match m {
                SignalMessage::VoiceMessages { count } if *count as usize <= left => Some(()),
                _ => None,
            })
            .await;
        }
        sig.close().await;
        Ok(())
    })
}

/// A message as the relay handed it over.
struct Fetched {
    id: String,
    from: Fingerprint,
    age_ms: u64,
    sealed: Vec<u8>,
}

/// Reads the parts the relay sends after `fetch_voice_messages`, until its
/// count of them.
async fn fetch(sig: &mut SignalConn) -> Result<Vec<Fetched>> {
    let mut done: Vec<Fetched> = Vec::new();
    let mut partial: Option<(Fetched, u32, u32)> = None;
    loop {
        // Each message from the relay gives it another while: a slow link
        // takes as long as it takes, a silent relay does not.
        let deadline = tokio::time::Instant::now() + ANSWER;
        let m = next(sig, deadline, "fetch_voice_messages").await?;
        if let SignalMessage::VoiceMessage { parts, data, .. } = &m {
            if *parts > MAX_MESSAGE_PARTS || data.len() > MESSAGE_PART_LEN {
                bail!(
                    "the relay sent a voice message part out of bounds ({parts} parts, {} bytes)",
                    data.len()
                );
            }
            if done.len() >= MAX_FETCHED {
                bail!("the relay sent more voice messages than a mailbox holds");
            }
        }
        match m {
            SignalMessage::VoiceMessage {
                id,
                from: Some(from),
                age_ms,
                part,
                parts,
                data,
                ..
            } => {
                let next = match partial.take() {
                    Some((f, n, want)) if f.id == id && part == want && parts == n => (f, n, want),
                    _ if part == 0 => (
                        Fetched {
                            id,
                            from,
                            age_ms: age_ms.unwrap_or(0),
                            sealed: Vec::new(),
                        },
                        parts,
                        0,
                    ),
                    _ => bail!("the relay sent part {part} of a voice message out of order"),
                };
                let (mut f, n, want) = next;
                if f.sealed.len() + data.len() > MAX_SEALED_MESSAGE {
                    bail!("the relay sent a voice message longer than one may be");
                }
                f.sealed.extend_from_slice(&data);
                if want + 1 == n {
                    done.push(f);
                } else {
                    partial = Some((f, n, want + 1));
                }
            }
            // The count after the parts (a count before them is news of
            // what waits, sent at registration).
            SignalMessage::VoiceMessages { count }
                if count as usize == done.len() && partial.is_none() =>
            {
                return Ok(done)
            }
            SignalMessage::Error {
                message,
                in_reply_to,
                ..
            } if in_reply_to.as_deref() == Some("fetch_voice_messages") => {
                bail!("the relay refused: {message}")
            }
            _ => {}
        }
    }
}

/// Opens a signal connection and registers under a fresh device (so it
/// never takes the place of this machine's `listen`), checking that the
/// relay keeps voice messages.
pub(super) async fn open(
    relay: &crate::signal::RelayOptions,
    identity: &wzp_proto::Identity,
) -> Result<SignalConn> {
    let (mut sig, relay_fp) = SignalConn::open(relay).await?;
    sig.set_mapping_test(MappingTest::Off);
    let device = crate::device::random()?;
    sig.register(identity, relay_fp, None, Some(device), false)
        .await?;
    if !sig.relay_has(FEATURE_VOICE_MESSAGES) {
        bail!(
            "the relay at {} keeps no voice messages (it is older than them, or they are off there: \
             voice_message_storage_mb = 0)",
            relay.relay
        );
    }
    Ok(sig)
}

/// Waits for the relay's answer `pick` finds; its refusal of `request` is
/// the error.
async fn answer<T>(
    sig: &mut SignalConn,
    request: &str,
    mut pick: impl FnMut(&SignalMessage) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + ANSWER;
    loop {
        let m = next(sig, deadline, request).await?;
        if let Some(t) = pick(&m) {
            return Ok(t);
        }
        if let SignalMessage::Error {
            message,
            in_reply_to,
            ..
        } = &m
        {
            if in_reply_to.as_deref() == Some(request) {
                bail!("the relay refused: {message}");
            }
        }
    }
}

/// The relay's next message, by `deadline` (`request`: what it answers).
async fn next(
    sig: &mut SignalConn,
    deadline: tokio::time::Instant,
    request: &str,
) -> Result<SignalMessage> {
    tokio::time::timeout_at(deadline, sig.recv())
        .await
        .map_err(|_| {
            anyhow!(
                "the relay did not answer {request} within {} s",
                ANSWER.as_secs()
            )
        })??
        .ok_or_else(|| sig.closed_why(request))
}

/// A key the relay handed out for `target`: signed, and `target`'s.
fn check_key(key: &MessageKey, target: &Fingerprint) -> Result<()> {
    match key.verify() {
        Ok(fp) if fp == *target => Ok(()),
        Ok(fp) => {
            bail!("the relay answered {fp}'s message key for {target}: refused (nothing was sent)")
        }
        Err(e) => bail!(
            "the relay answered a message key for {target} that does not verify ({e}): refused"
        ),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the network runtime")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

/// `YYYYMMDD-HHMMSS` (UTC) of Unix ms `ms`.
fn stamp(ms: u64) -> String {
    let ((y, m, d), rem) = crate::history::civil(ms / 1000);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How long ago, in words.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// What `input` says, as mono 48 kHz, at most `max` long.
pub fn capture(input: &str, max: Duration) -> Result<Vec<f32>> {
    let n = (max.as_secs_f64() * f64::from(RATE)) as usize;
    let mut pcm = if let Some(f) = input
        .strip_prefix("tone:")
        .or((input == "tone").then_some("440"))
    {
        let f: f64 = f
            .parse()
            .ok()
            .filter(|f: &f64| (20.0..=20_000.0).contains(f))
            .ok_or_else(|| {
                anyhow!("--input {input}: expected tone or tone:FREQ_HZ (20..=20000)")
            })?;
        (0..n)
            .map(|i| (0.25 * (std::f64::consts::TAU * f * i as f64 / f64::from(RATE)).sin()) as f32)
            .collect()
    } else if input == "builtin" {
        wzp_stages::audio::signal::speech_like(RATE)
    } else if let Some(device) = crate::call::graph::microphone(input) {
        record_mic(device, max)?
    } else {
        wzp_stages::audio::wav_source::load_mono_at(Path::new(input), RATE)
            .map_err(|e| anyhow!("--input: {e}"))?
    };
    pcm.truncate(n);
    if pcm.len() < FRAME {
        bail!("--input {input}: less than 20 ms of audio");
    }
    Ok(pcm)
}

/// Records the microphone `device` for up to `max` (Ctrl-C ends it sooner).
fn record_mic(device: &str, max: Duration) -> Result<Vec<f32>> {
    let dir = tempfile::tempdir().context("a temporary folder for the recording")?;
    let path = dir.path().join("message.wav");
    let spec = record_spec(
        &format!(
            "kind = \"audio.device_capture\"\nparams = {{ rate = 48000, device = {:?} }}",
            device
        ),
        &path,
    )?;
    println!(
        "recording a voice message: speak now; Ctrl-C ends it (at most {} s)",
        max.as_secs()
    );
    run_recording(spec, max)?;
    wzp_stages::audio::wav_source::load_mono_at(&path, RATE).map_err(|e| anyhow!("{e}"))
}

/// A graph from the stage `source` (its `kind` and `params` lines) to a
/// 48 kHz WAV at `path`.
fn record_spec(source: &str, path: &Path) -> Result<wzp_engine::prelude::GraphSpec> {
    let text = format!(
        "[graph]\nname = \"voice-message\"\nclock = {{ driver = \"timer\", quantum_ms = 20, rate = 48000 }}\n\n\
         [[stage]]\nid = \"src\"\n{source}\n\n\
         [[stage]]\nid = \"rec\"\nkind = \"audio.wav_sink\"\nparams = {{ path = {:?}, rate = 48000 }}\n\n\
         [[link]]\nfrom = \"src.out\"\nto = \"rec.in\"\n",
        path.display().to_string()
    );
    wzp_engine::prelude::GraphSpec::parse(&text, "voice-message", &Default::default())
        .map_err(|e| anyhow!("{e}"))
}

/// Plays the WAV at `path` into the stage `sink` (its `kind` and `params`
/// lines) to its end, or until Ctrl-C.
fn play_wav(path: &Path, sink: &str) -> Result<()> {
    let text = format!(
        "[graph]\nname = \"voice-message-play\"\nclock = {{ driver = \"timer\", quantum_ms = 20, rate = 48000 }}\n\n\
         [[stage]]\nid = \"src\"\nkind = \"audio.wav_source\"\nparams = {{ path = {:?}, rate = 48000 }}\n\n\
         [[stage]]\nid = \"out\"\n{sink}\n\n\
         [[link]]\nfrom = \"src.out\"\nto = \"out.in\"\n",
        path.display().to_string()
    );
    let spec =
        wzp_engine::prelude::GraphSpec::parse(&text, "voice-message-play", &Default::default())
            .map_err(|e| anyhow!("{e}"))?;
    let secs = wzp_stages::audio::wav_source::read_wav_mono(path)
        .map(|w| w.samples.len() as u64 / u64::from(w.rate.max(1)) + 2)
        .unwrap_or(130);
    run_recording(spec, Duration::from_secs(secs))
}

/// Runs a recording graph for `max`, or until Ctrl-C / SIGTERM.
fn run_recording(spec: wzp_engine::prelude::GraphSpec, max: Duration) -> Result<()> {
    use wzp_engine::prelude::*;
    let registry = wzp_stages::registry();
    let compiled = compile(&spec, &registry, &Resources::new()).map_err(|e| anyhow!("{e}"))?;
    let mut graph = Graph::new(compiled);
    let stop: Arc<AtomicBool> = graph.stop_flag();
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    graph
        .start(RunOptions {
            driver: spec.clock.driver,
            duration: Some(max),
            ..Default::default()
        })
        .map_err(|e| anyhow!("{e}"))?;
    while !graph.wait(Duration::from_millis(100)) && !stop.load(Ordering::Relaxed) {}
    graph.stop();
    drop(graph);
    Ok(())
}

/// Opus packets of `pcm` (48 kHz mono), 20 ms each (the last frame padded
/// with silence).
pub fn encode(pcm: &[f32]) -> Result<Vec<Vec<u8>>> {
    let mut enc =
        wzp_stages::codec::opus_ffi::speech_encoder(MESSAGE_BITRATE).map_err(|e| anyhow!(e))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    for chunk in pcm.chunks(FRAME) {
        let mut frame = [0f32; FRAME];
        frame[..chunk.len()].copy_from_slice(chunk);
        let n = enc
            .encode_float(&frame, &mut buf)
            .map_err(|e| anyhow!("encoding: {}", wzp_stages::codec::opus_ffi::strerror(e)))?;
        out.push(buf[..n].to_vec());
    }
    if out.len() > MAX_FRAMES {
        out.truncate(MAX_FRAMES);
    }
    Ok(out)
}

/// 48 kHz mono of Opus packets.
pub fn decode(frames: &[Vec<u8>]) -> Result<Vec<f32>> {
    let mut dec = wzp_stages::codec::opus_ffi::Decoder::new().map_err(|e| anyhow!(e))?;
    let mut out = Vec::with_capacity(frames.len() * FRAME);
    let mut buf = [0f32; FRAME];
    for f in frames {
        // A packet that does not decode is concealed: the rest still plays.
        let n = match dec.decode_float(Some(f), &mut buf, false) {
            Ok(n) => n,
            Err(_) => dec.decode_float(None, &mut buf, false).unwrap_or(0),
        };
        out.extend_from_slice(&buf[..n.min(FRAME)]);
    }
    Ok(out)
}

/// `name` as a word in a file name: letters, digits, `-`, `_` and `.`
/// kept, anything else `_` (a contact called `a/b` must not name a folder).
fn file_word(name: &str) -> String {
    let w: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match w.trim_start_matches('.') {
        "" => "_".into(),
        t => t.to_string(),
    }
}

/// Saves with `write` to `path`, or the next free name beside it; never
/// over a file already there (one made meanwhile by another run too).
fn save_new(path: &Path, write: impl Fn(&Path) -> Result<()>) -> Result<PathBuf> {
    for _ in 0..100 {
        let p = crate::call::fresh_path(path);
        match write(&p) {
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists) =>
            {
                continue
            }
            r => return r.map(|()| p),
        }
    }
    bail!("no free file name beside {}", path.display())
}

/// Writes 48 kHz mono 16-bit PCM to a new file (an existing one is an
/// `AlreadyExists` error).
fn write_wav(path: &Path, pcm: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(anyhow::Error::from)?;
    let mut w = hound::WavWriter::new(std::io::BufWriter::new(file), spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for s in pcm {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.finalize()
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_survives_encoding_and_decoding() {
        let pcm = capture("tone:440", Duration::from_secs(2)).unwrap();
        assert_eq!(pcm.len(), 96_000);
        let frames = encode(&pcm).unwrap();
        assert_eq!(frames.len(), 100);
        let bytes: usize = frames.iter().map(Vec::len).sum();
        // About 16 kb/s.
        assert!((2_000..=6_000).contains(&bytes), "{bytes} bytes for 2 s");
        let out = decode(&frames).unwrap();
        assert_eq!(out.len(), 96_000);
        let tail = &out[48_000..];
        let level = |f: f64| wzp_stages::audio::signal::goertzel_dbfs(tail, RATE, f);
        assert!(level(440.0) > -18.0, "{}", level(440.0));
        assert!(level(1500.0) < level(440.0) - 30.0);
    }

    #[test]
    fn inputs_are_checked_with_what_to_do() {
        for (input, needle) in [
            ("tone:5", "tone:FREQ_HZ"),
            ("tone:x", "tone:FREQ_HZ"),
            ("/nonexistent/x.wav", "cannot open"),
        ] {
            let e = capture(input, Duration::from_secs(1))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
        // A WAV is cut at the duration.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.wav");
        write_wav(&p, &vec![0.1; 48_000 * 3]).unwrap();
        assert_eq!(
            capture(p.to_str().unwrap(), Duration::from_secs(1))
                .unwrap()
                .len(),
            48_000
        );
        let short = dir.path().join("short.wav");
        write_wav(&short, &[0.1; 100]).unwrap();
        assert!(capture(short.to_str().unwrap(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_recording_graph_writes_what_its_source_makes() {
        // The microphone's graph, with a tone where the device would be.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wav");
        let mut spec = record_spec(
            "kind = \"audio.tone_source\"\nparams = { freq = 500.0, rate = 48000 }",
            &path,
        )
        .unwrap();
        spec.clock.driver = wzp_engine::prelude::ClockDriver::Fast;
        run_recording(spec, Duration::from_secs(1)).unwrap();
        let got = wzp_stages::audio::wav_source::load_mono_at(&path, RATE).unwrap();
        assert!((47_000..=49_000).contains(&got.len()), "{}", got.len());
        assert!(wzp_stages::audio::signal::goertzel_dbfs(&got, RATE, 500.0) > -30.0);
    }

    #[test]
    fn saved_files_never_replace_one_and_names_stay_in_their_folder() {
        assert_eq!(file_word("alice"), "alice");
        assert_eq!(file_word("a/b"), "a_b");
        assert_eq!(file_word("../x"), "_x");
        assert_eq!(file_word("..."), "_");
        assert_eq!(file_word("zoë"), "zoë");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.wav");
        std::fs::write(&p, b"earlier").unwrap();
        let got = save_new(&p, |p| write_wav(p, &[0.0; 960])).unwrap();
        assert_eq!(got, dir.path().join("v-2.wav"));
        assert_eq!(std::fs::read(&p).unwrap(), b"earlier");
        // A file made between the check and the write is not replaced.
        let e = write_wav(&got, &[0.0; 960]).unwrap_err();
        assert!(e.downcast_ref::<std::io::Error>().is_some(), "{e}");
    }

    #[test]
    fn a_message_plays_to_its_end_into_the_sink() {
        // The speaker's graph, with a null sink where the device would be.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.wav");
        write_wav(&p, &vec![0.1; 48_000]).unwrap();
        play_wav(&p, "kind = \"audio.null_sink\"\nparams = { rate = 48000 }").unwrap();
        let e = play_wav(
            &dir.path().join("none.wav"),
            "kind = \"audio.null_sink\"\nparams = { rate = 48000 }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("none.wav"), "{e}");
    }

    #[test]
    fn stamps_and_ages_read_as_people_write_them() {
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(1_700_000_000_000), "20231114-221320");
        assert_eq!(stamp(951_825_600_000), "20000229-120000");
        assert_eq!(ago(5_000), "5 s");
        assert_eq!(ago(125_000), "2 min");
        assert_eq!(ago(7_200_000), "2 h");
        assert_eq!(ago(3 * 86_400_000), "3 days");
    }
}
