//! `wzp-client listen --relay ADDR`: register, answer incoming calls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::ValueEnum;
use wzp_proto::direct_call::{CallEvent, IncomingCall};
use wzp_proto::direct_path::Role;
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::signal::{AcceptMode, SignalMessage};

use super::direct::{
    flush, held_reads, run_joined, run_media, CallEnd, Held, JoinEnd, MediaArgs, RelayArgs, Resume,
    UserInput, Waiting,
};
use crate::call::controls::{self, Answer, Controls};
use crate::contacts::{Contact, Contacts};
use crate::history::{self, Dir, Entry, Outcome};
use crate::signal::{ConnectError, MappingTest, RelayOptions, SignalConn};

pub const LISTEN_EXAMPLES: &str = "\
Examples:
  wzp-client listen --relay 203.0.113.7:4433
      Wait for calls. In a terminal (`--accept ask`, the default there) each
      call rings: `a` answers, `d` declines, and it stops ringing when the
      caller gives up. A caller in your contacts learns your address and the
      media goes straight between you while that path works; anyone else is
      answered through the relay only. Microphone in, speaker out.
      While you are in a call, another caller rings as a waiting call: `a`
      ends the call in progress and answers it, `s` puts it on hold and
      answers (then `s` swaps between the two, `c` joins them into one
      where each hears the other and you; when one ends the other stays on
      hold until `h`), `d` declines it (the caller hears that you are in
      another call while it rings).
  wzp-client listen --relay 203.0.113.7:4433 --accept contacts
      Answer every call at once, as above (the default with no terminal:
      a service, a script).
  wzp-client listen --relay 203.0.113.7:4433 --on-call 'notify-send \"wzp call\" \"${WZP_CALLER_NAME:-$WZP_CALLER}\"'
      A desktop notification as each call comes in (the caller is in the
      command's environment, never in its text).
  wzp-client listen --relay 203.0.113.7:4433 --accept contacts-only
      Answer your contacts only; decline everyone else.
  wzp-client listen --relay 203.0.113.7:4433     (on the phone, and on the laptop)
      One identity on two devices (`wzp-client identity restore` on the
      second): each call rings on both, the first to answer takes it and
      the other says `answered on another device` (history: answered
      elsewhere). Each device keeps its id in ~/.wzp/identity.device.
  wzp-client listen --relay 203.0.113.7:4433 --relay-only
      Answer everyone, with the media always through the relay and your
      address shared with no one.
  wzp-client listen --relay 127.0.0.1:4433 --accept generic --input talk.wav --output heard.wav --duration 10s --once
      Answer one call through the relay only (your address stays private),
      send a WAV, record the caller, end after 10 s and exit.
  wzp-client listen --relay 127.0.0.1:4433 --accept reject
      Decline every call.
  wzp-client listen --relay 203.0.113.7:4433,198.51.100.9:4433
      Register at the first of two federated relays that answers; when it
      goes away, at the other (calls find you through the federation).

Each offer is printed with the caller's fingerprint and alias, and whether
it is a contact (an alias that is a contact's name on another fingerprint is
warned about: the alias is the caller's claim, the fingerprint is proven); an
answered call prints `SAS: CODE` (the caller prints the same code). When the relay
goes away, listen registers again as soon as it is back, or at the next
relay given (`--relay A,B`).";

/// How to answer offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accept {
    /// Ring, and let the person answer (`a`) or decline (`d`); answered,
    /// as `contacts` does. Keys come from the terminal, or from a standard
    /// input that is not one (a program answering for the user). The
    /// default in a terminal.
    Ask,
    /// Accept everyone: contacts as `trusted`, anyone else as `generic`
    /// (a stranger who knows your fingerprint never learns your address).
    Contacts,
    /// Accept contacts (as `trusted`), decline anyone else.
    ContactsOnly,
    /// Accept everyone, and let every caller learn our address (the media
    /// goes straight between the two while that path works).
    Trusted,
    /// Accept through the relay only: our address is never revealed.
    Generic,
    /// Decline.
    Reject,
}

#[derive(clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// How to answer each incoming call [default: ask in a terminal,
    /// contacts otherwise].
    #[arg(long, value_enum)]
    pub accept: Option<Accept>,
    /// Contacts file (read again at each call). Default ~/.wzp/contacts.toml.
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    #[command(flatten)]
    pub media: MediaArgs,
    #[command(flatten)]
    pub history: super::history::HistoryArgs,
    /// Exit after the first call.
    #[arg(long)]
    pub once: bool,
    /// Run this shell command as each call comes in (a blocked caller's
    /// excepted), before it rings or is answered: e.g. a desktop
    /// notification. It gets the caller in its environment, never in its
    /// text: WZP_CALLER (the fingerprint), WZP_CALLER_NAME (a contact's
    /// name, or empty), WZP_CALLER_ALIAS (what the caller calls itself, its
    /// claim: quote it), WZP_RINGS (1 when it rings for an answer, 0 when
    /// `--accept` answers or declines it at once).
    #[arg(long, value_name = "COMMAND")]
    pub on_call: Option<String>,
}

pub fn listen_cmd(args: ListenArgs) -> Result<()> {
    let contacts_path = super::contacts::contacts_path(args.contacts.clone())?;
    // A broken file is said at once, not at the first call.
    Contacts::load(&contacts_path)?;
    let relays = args.relay.all_options()?;
    let identity = relays[0].identity()?;
    let device = crate::device::load_or_create(&relays[0].identity)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    // A person at a terminal is asked; a service or a script answers by
    // the policy it was given.
    let accept = args.accept.unwrap_or(if controls::interactive() {
        Accept::Ask
    } else {
        Accept::Contacts
    });
    let controls = Arc::new(Controls::new(args.media.muted, accept == Accept::Ask)?);
    let history = args.history.open()?;
    // A person at the keys may take a second call while in one; a policy
    // (and `--once`) keeps one call at a time: the caller hears busy.
    let takes_waiting = accept == Accept::Ask && !args.once;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    rt.block_on(async move {
        let mut registered_once = false;
        let mut backoff = Duration::from_millis(100);
        // Which relay of the list, and (before the first registration)
        // what each that could not take it said.
        let mut at = 0usize;
        let mut failed: Vec<String> = Vec::new();
        let count = relays.len();
        let mut first_failed = |at: &mut usize, e: anyhow::Error| -> Result<()> {
            if count == 1 {
                return Err(e);
            }
            failed.push(format!("{}: {e}", relays[*at].relay));
            if failed.len() >= count {
                anyhow::bail!("no relay took the registration:\n  {}", failed.join("\n  "));
            }
            *at = (*at + 1) % count;
            Ok(())
        };
        while !stop.load(Ordering::Relaxed) {
            let relay = &relays[at];
            let (mut sig, relay_fp) = match SignalConn::open(relay).await {
                Ok(s) => s,
                Err(ConnectError::Unreachable { .. }) if registered_once => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    at = (at + 1) % count;
                    continue;
                }
                Err(e) if !registered_once => {
                    first_failed(&mut at, e.into())?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            sig.set_mapping_test(if args.media.relay_only {
                MappingTest::Off
            } else {
                MappingTest::Wait
            });
            let reg = match sig
                .register(
                    &identity,
                    relay_fp,
                    args.media.alias.clone(),
                    Some(device),
                    takes_waiting,
                )
                .await
            {
                Ok(r) => r,
                Err(e) if registered_once => {
                    tracing::debug!("registering again: {e}");
                    tokio::time::sleep(backoff).await;
                    at = (at + 1) % count;
                    continue;
                }
                Err(e) => {
                    first_failed(&mut at, e)?;
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            println!(
                "{} {} at {} ({} {}); observed address {}",
                if registered_once { "registered again as" } else { "registered as" },
                identity.fingerprint(),
                relay.relay,
                reg.relay_label.as_deref().unwrap_or("relay"),
                reg.version.as_deref().unwrap_or("of unknown version"),
                reg.observed_addr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            if let Some(n) = reg.devices.filter(|n| *n > 1) {
                println!("{n} of your devices listen at this relay: a call rings each, and the first to answer takes it");
            }
            if reg.mapping != wzp_proto::mapping::Mapping::Unknown {
                println!(
                    "NAT mapping of this socket: {} (tested against the relay's mapping port)",
                    reg.mapping.label()
                );
            }
            registered_once = true;
            let cx = LineCtx {
                relay,
                identity: &identity,
                media: &args.media,
                accept,
                once: args.once,
                on_call: args.on_call.clone(),
                stop: stop.clone(),
                controls: controls.clone(),
                history: history.clone(),
                contacts_path: contacts_path.clone(),
                takes_waiting,
                observed_addr: reg.observed_addr,
                device,
                idle_exit: false,
                next_relay: (count > 1).then(|| relays[(at + 1) % count].relay.clone()),
            };
            match run_line(&cx, &mut sig, LineState::default()).await? {
                LineEnd::Done => {
                    sig.close().await;
                    return Ok(());
                }
                LineEnd::SignalLost => {
                    at = (at + 1) % count;
                    continue;
                }
            }
        }
        Ok(())
    })
}

/// What a device's line needs from its command: `listen`, or `call` once
/// its call is up and another rings as a waiting call.
pub(super) struct LineCtx<'a> {
    pub relay: &'a RelayOptions,
    pub identity: &'a wzp_proto::Identity,
    pub media: &'a MediaArgs,
    pub accept: Accept,
    pub once: bool,
    pub on_call: Option<String>,
    pub stop: Arc<AtomicBool>,
    pub controls: Arc<Controls>,
    pub history: crate::history::History,
    pub contacts_path: PathBuf,
    pub takes_waiting: bool,
    pub observed_addr: Option<std::net::SocketAddr>,
    pub device: wzp_proto::presence::DeviceId,
    /// With no call left, end rather than wait for the next offer (`call`:
    /// its calls are over).
    pub idle_exit: bool,
    /// The relay to register at when this one goes away (`listen` given
    /// several); none: this one again when it is back.
    pub next_relay: Option<String>,
}

/// What a line says when its relay went away.
fn lost_relay(cx: &LineCtx<'_>) -> String {
    match &cx.next_relay {
        Some(next) => format!(
            "lost the relay at {}; registering at {next}",
            cx.relay.relay
        ),
        None => format!(
            "lost the relay at {}; registering again when it is back",
            cx.relay.relay
        ),
    }
}

/// The calls a line has besides the one in progress.
#[derive(Default)]
pub(super) struct LineState {
    /// A call that came while in one (call waiting), taken up next.
    pub next: Option<Waiting>,
    /// The call held while in another (`s`).
    pub held: Option<Held>,
    /// The one to take up again next (taken back, or still held once the
    /// other ended).
    pub resume: Option<(Held, Resume)>,
    /// Two calls to join (`c`): the one in progress, and the held one.
    pub joining: Option<(Held, Held)>,
}

impl LineState {
    /// What [`after_media`] updates.
    pub(super) fn line(&mut self) -> Line<'_> {
        Line {
            held: &mut self.held,
            next: &mut self.next,
            resume: &mut self.resume,
            joining: &mut self.joining,
        }
    }
}

/// How a line ended.
pub(super) enum LineEnd {
    /// Stopped (Ctrl-C), `--once` done, or no call left (`idle_exit`):
    /// the caller closes the connection.
    Done,
    /// The relay went: register again.
    SignalLost,
}

/// A device's calls, one after another: offers rung and answered by the
/// policy, waiting calls taken up, calls held, swapped and joined.
pub(super) async fn run_line(
    cx: &LineCtx<'_>,
    sig: &mut SignalConn,
    state: LineState,
) -> Result<LineEnd> {
    let mut st = state;
    let user_with = |with: String| UserInput {
        stop: cx.stop.clone(),
        controls: cx.controls.clone(),
        with,
        missed_to: Some(cx.history.clone()),
        contacts: Some(cx.contacts_path.clone()),
        takes_waiting: cx.takes_waiting,
        on_call: cx.on_call.clone(),
    };
    loop {
        if let Some((mut main, mut leg)) = st.joining.take() {
            let user = user_with(main.with.clone());
            match run_joined(sig, &mut main, &mut leg, cx.relay, cx.media, &user).await? {
                JoinEnd::Both(_) => {}
                JoinEnd::OneLeft { main: main_left } => {
                    let on = if main_left { leg } else { main };
                    let r = Resume {
                        held_here: false,
                        peer_holds: on.peer_holds,
                        tell: false,
                    };
                    st.resume = Some((on, r));
                }
                JoinEnd::Split => {
                    st.held = Some(leg);
                    let r = Resume {
                        held_here: false,
                        peer_holds: main.peer_holds,
                        tell: false,
                    };
                    st.resume = Some((main, r));
                }
            }
            continue;
        }
        // Nothing else to take up: the held call is the call again.
        if st.resume.is_none() && st.next.is_none() {
            if let Some(h) = st.held.take() {
                let r = Resume {
                    held_here: true,
                    peer_holds: h.peer_holds,
                    tell: false,
                };
                st.resume = Some((h, r));
            }
        }
        if let Some((mut h, r)) = st.resume.take() {
            let user = user_with(h.with.clone());
            let ended = run_media(
                sig,
                h.call.as_mut(),
                &h.ready,
                cx.relay,
                cx.media,
                None,
                &user,
                &mut st.held,
                Some(r),
            )
            .await;
            let (end, waiting) = ended.inspect_err(|_| h.record(Some(&cx.history)))?;
            after_media(end, waiting, h, st.line(), &cx.history);
            continue;
        }
        let (mut call, waited) = match st.next.take() {
            Some(mut w) => {
                if w.answered {
                    println!("answering the waiting call from {}", call_name(&w));
                } else {
                    println!(
                        "the call in progress ended; the waiting call from {} rings on",
                        call_name(&w)
                    );
                }
                if w.keep {
                    // The relay keeps the call held meanwhile.
                    w.call.keep_current();
                }
                (w.call, Some((w.answered, w.contact)))
            }
            None => {
                if cx.idle_exit {
                    return Ok(LineEnd::Done);
                }
                let msg = tokio::select! {
                    m = sig.recv() => m,
                    _ = async { while !cx.stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => {
                        return Ok(LineEnd::Done);
                    }
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => {
                        replaced(sig, &cx.relay.relay, cx.device, &cx.relay.identity)?;
                        println!("{}", lost_relay(cx));
                        return Ok(LineEnd::SignalLost);
                    }
                };
                // Someone called while this person was in a call on
                // another of its devices.
                if super::direct::missed_call(
                    &msg,
                    "while you were in another call",
                    Some(&cx.history),
                    Some(&cx.contacts_path),
                ) {
                    continue;
                }
                if voice_messages(&msg) {
                    continue;
                }
                if !matches!(msg, SignalMessage::DirectCallOffer { .. }) {
                    continue;
                }
                let call = match IncomingCall::from_offer(&msg) {
                    Ok(c) => c,
                    Err(e) => {
                        if let Some(refusal) = wzp_proto::direct_call::refusal(&msg, &e) {
                            sig.send(&refusal).await?;
                        }
                        println!("refused a malformed offer: {e}");
                        continue;
                    }
                };
                println!(
                    "incoming call from {}{}",
                    call.caller(),
                    call.caller_alias()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                );
                (call, None)
            }
        };
        // A `q` pressed between calls hangs up none of them.
        cx.controls.take_hangup();
        let offered = history::now();
        let (from, alias) = (call.caller(), call.caller_alias().map(str::to_string));
        let record = |outcome: Outcome, secs: u64| {
            cx.history.record(&Entry {
                at: offered,
                dir: Dir::In,
                peer: from,
                alias: alias.clone(),
                outcome,
                secs,
            })
        };
        // Read at each call: the file may have changed meanwhile.
        let contacts = match Contacts::load(&cx.contacts_path) {
            Ok(c) => c,
            Err(e) => {
                println!("cannot read the contacts ({e:#}); taking the caller for a stranger");
                Contacts::empty(&cx.contacts_path)
            }
        };
        let caller = call.caller();
        if let Some(b) = contacts.is_blocked(&caller) {
            record(Outcome::Blocked, 0);
            call.reject();
            flush(sig, &mut call).await?;
            println!(
                "declined: {caller} is blocked{}",
                if b.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", b.note)
                }
            );
            if cx.once {
                return Ok(LineEnd::Done);
            }
            continue;
        }
        // A waiting call was described when it came.
        let contact = match &waited {
            Some((_, c)) => c.clone(),
            None => describe_caller(&call, &contacts),
        };
        if let Some(cmd) = cx.on_call.as_ref().filter(|_| waited.is_none()) {
            on_call(
                cmd,
                &caller,
                contact.as_ref().map(|c| c.name.as_str()),
                call.caller_alias(),
                cx.accept == Accept::Ask,
            );
        }
        let policy = if waited.as_ref().is_some_and(|(answered, _)| *answered) {
            // The person ended the call in progress to answer this.
            Accept::Contacts
        } else if cx.accept == Accept::Ask {
            // The speaker rings too; stopped (its device closed)
            // before an answered call's graph opens it.
            let tone = cx.media.ring_tone(crate::call::ring::RING);
            let rang = ring(
                sig,
                &mut call,
                &cx.controls,
                &cx.stop,
                &cx.history,
                &cx.contacts_path,
                waited.is_some(),
            )
            .await;
            drop(tone);
            match rang? {
                Rang::Answered => Accept::Contacts,
                Rang::Declined => Accept::Reject,
                Rang::Ended(why, elsewhere) => {
                    match elsewhere {
                        Some(outcome) => {
                            record(outcome, 0);
                            println!("{why}");
                        }
                        None => {
                            record(Outcome::Missed, 0);
                            println!("the call ended before you answered ({why})");
                        }
                    }
                    if cx.once {
                        return Ok(LineEnd::Done);
                    }
                    continue;
                }
                Rang::Stopped => {
                    record(Outcome::Missed, 0);
                    call.reject();
                    let _ = flush(sig, &mut call).await;
                    return Ok(LineEnd::Done);
                }
                Rang::SignalLost => {
                    record(Outcome::Failed, 0);
                    replaced(sig, &cx.relay.relay, cx.device, &cx.relay.identity)?;
                    println!("{}", lost_relay(cx));
                    return Ok(LineEnd::SignalLost);
                }
            }
        } else {
            cx.accept
        };
        let mode = match (policy, &contact) {
            (Accept::Trusted, _)
            | (Accept::Contacts | Accept::ContactsOnly | Accept::Ask, Some(_)) => {
                Some(AcceptMode::AcceptTrusted)
            }
            (Accept::Generic, _) | (Accept::Contacts | Accept::Ask, None) => {
                Some(AcceptMode::AcceptGeneric)
            }
            (Accept::Reject, _) | (Accept::ContactsOnly, None) => None,
        };
        let Some(mode) = mode else {
            record(Outcome::Declined, 0);
            call.reject();
            flush(sig, &mut call).await?;
            println!("rejected");
            if cx.once {
                return Ok(LineEnd::Done);
            }
            continue;
        };
        let eph = EphemeralKey::random().map_err(|e| anyhow!("no randomness: {e}"))?;
        // Trusting the caller shares this side's address, for a
        // direct path (not with --relay-only).
        let addr = if matches!(mode, AcceptMode::AcceptTrusted) && !cx.media.relay_only {
            cx.observed_addr
        } else {
            None
        };
        if addr.is_some() {
            call.share_local(&crate::nat::own_local_addrs(
                sig.endpoint(),
                sig.conn.remote_address(),
                addr,
            ));
        }
        call.accept(cx.identity, eph, mode, addr)
            .map_err(|e| anyhow!("{e}"))?;
        flush(sig, &mut call).await?;
        let ready = loop {
            let Some(m) = sig.recv().await? else {
                break None;
            };
            held_reads(sig, &mut st.held, &m, Some(&cx.history)).await?;
            let ev = call.handle(&m);
            flush(sig, &mut call).await?;
            match ev {
                Some(CallEvent::Answered(r)) => break Some(r),
                Some(CallEvent::HungUp { reason, message }) if elsewhere(reason).is_some() => {
                    record(elsewhere(reason).unwrap_or(Outcome::AnsweredElsewhere), 0);
                    println!(
                        "{}",
                        message.unwrap_or_else(|| "answered on another device".into())
                    );
                    break None;
                }
                Some(CallEvent::HungUp { .. }) | Some(CallEvent::Failed { .. }) => {
                    record(Outcome::Failed, 0);
                    println!("the call ended before it started");
                    break None;
                }
                _ => {}
            }
        };
        if let Some(ready) = ready {
            println!("answered {} (room {})", ready.peer, ready.room);
            println!(
                "{}",
                if addr.is_some() {
                    "your address went to the caller, for a direct path"
                } else {
                    "answered through the relay only: your address stays private"
                }
            );
            println!("{}", super::call::sas_hint(contact.as_ref(), &caller));
            let began = std::time::Instant::now();
            let with = contact
                .as_ref()
                .map_or(caller.to_string(), |c| c.name.clone());
            let ended = run_media(
                sig,
                &mut call,
                &ready,
                cx.relay,
                cx.media,
                addr.map(|own| (Role::Acceptor, Some(own))),
                &user_with(with.clone()),
                &mut st.held,
                None,
            )
            .await;
            let this = Held {
                call: Box::new(call),
                ready: *ready,
                with,
                peer_holds: false,
                peer: from,
                alias: alias.clone(),
                dir: Dir::In,
                offered,
                began,
            };
            let (end, waiting) = ended.inspect_err(|_| this.record(Some(&cx.history)))?;
            after_media(end, waiting, this, st.line(), &cx.history);
        }
        if cx.once {
            return Ok(LineEnd::Done);
        }
    }
}

/// What this device has besides the call in progress: the call held, the
/// waiting call to take up next, a call to take back, two calls to join.
pub(super) struct Line<'a> {
    pub held: &'a mut Option<Held>,
    pub next: &'a mut Option<Waiting>,
    pub resume: &'a mut Option<(Held, Resume)>,
    pub joining: &'a mut Option<(Held, Held)>,
}

/// What comes after a call's media ended: a call held (`s`) is kept as
/// the held one, and the waiting call it was held for is answered next, or
/// the call held before is taken back (a swap); a call that ended is kept
/// in the history, and the waiting call that rang meanwhile is next.
pub(super) fn after_media(
    end: CallEnd,
    waiting: Option<Waiting>,
    mut this: Held,
    line: Line<'_>,
    history: &crate::history::History,
) {
    let Line {
        held,
        next,
        resume,
        joining,
    } = line;
    if let CallEnd::Join { peer_holds } = end {
        this.peer_holds = peer_holds;
        *next = waiting;
        match held.take() {
            Some(other) => *joining = Some((this, other)),
            // The held call ended as they were joined: this one goes on.
            None => {
                let r = Resume {
                    held_here: false,
                    peer_holds,
                    tell: false,
                };
                *resume = Some((this, r));
            }
        }
        return;
    }
    let CallEnd::Held { peer_holds } = end else {
        this.record(Some(history));
        *next = waiting;
        return;
    };
    this.peer_holds = peer_holds;
    if waiting.as_ref().is_some_and(|w| w.keep) {
        *held = Some(this);
        *next = waiting;
        return;
    }
    *next = waiting;
    // A swap: the held call is taken back, this one held; with none (it
    // ended as this one was held) this one is taken back at once.
    let (back, keep) = match held.take() {
        Some(other) => (other, Some(this)),
        None => (this, None),
    };
    *held = keep;
    let r = Resume {
        held_here: false,
        peer_holds: back.peer_holds,
        tell: true,
    };
    *resume = Some((back, r));
}

/// How a ringing call ended.
enum Rang {
    Answered,
    Declined,
    /// The caller hung up, the relay's ringing time ran out, or another
    /// of the person's devices answered or declined it (its outcome).
    Ended(String, Option<Outcome>),
    /// Ctrl-C, SIGTERM.
    Stopped,
    SignalLost,
}

/// Rings until the person answers or declines (`a`, `d`), the call ends
/// from the other side, or `stop`.
async fn ring(
    sig: &mut SignalConn,
    call: &mut IncomingCall,
    controls: &Controls,
    stop: &AtomicBool,
    history: &crate::history::History,
    contacts: &std::path::Path,
    waited: bool,
) -> Result<Rang> {
    // A key pressed before the ring answers nothing; but a waiting call
    // whose prompt was on screen keeps the answer typed to it.
    if !waited {
        controls.take_answer();
    }
    let bell = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        "\x07"
    } else {
        ""
    };
    println!("ringing{bell}: a answers, d declines");
    loop {
        tokio::select! {
            m = sig.recv() => match m {
                Ok(Some(m)) if super::direct::missed_call(&m, "while this one rang", Some(history), Some(contacts)) => {}
                Ok(Some(m)) => {
                    let ev = call.handle(&m);
                    flush(sig, call).await?;
                    match ev {
                        Some(CallEvent::HungUp { reason, message }) => {
                            return Ok(Rang::Ended(
                                message.unwrap_or_else(|| format!("{reason:?}").to_lowercase()),
                                elsewhere(reason),
                            ));
                        }
                        Some(CallEvent::NoAnswer) => {
                            return Ok(Rang::Ended("rang out unanswered".into(), None));
                        }
                        Some(CallEvent::Failed { error }) => {
                            return Ok(Rang::Ended(error.to_string(), None));
                        }
                        _ => {}
                    }
                }
                Ok(None) | Err(_) => return Ok(Rang::SignalLost),
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(Rang::Stopped);
                }
                match controls.take_answer() {
                    Some(Answer::Accept) => return Ok(Rang::Answered),
                    Some(Answer::Decline) => return Ok(Rang::Declined),
                    None => {}
                }
            }
        }
    }
}

/// A relay's `voice_messages` count, said when any wait; whether `msg` was one.
pub(super) fn voice_messages(msg: &SignalMessage) -> bool {
    let SignalMessage::VoiceMessages { count } = msg else {
        return false;
    };
    if *count > 0 {
        println!(
            "{count} voice message{} wait{} for you at this relay: `wzp-client messages` fetches {}",
            if *count == 1 { "" } else { "s" },
            if *count == 1 { "s" } else { "" },
            if *count == 1 { "it" } else { "them" },
        );
    }
    true
}

/// The outcome of a call another of the person's devices took or declined.
pub(super) fn elsewhere(reason: wzp_proto::signal::HangupReason) -> Option<Outcome> {
    use wzp_proto::signal::HangupReason as R;
    match reason {
        R::AnsweredElsewhere => Some(Outcome::AnsweredElsewhere),
        R::DeclinedElsewhere => Some(Outcome::DeclinedElsewhere),
        _ => None,
    }
}

/// When the relay closed the connection because another registration of
/// this device replaced it, listening here ends with why: registering
/// again would take the registration back from the other, which would do
/// the same. (A relay older than devices keeps one registration per person:
/// there the old behaviour stands, and the two take turns.)
fn replaced(
    sig: &SignalConn,
    relay: &str,
    device: wzp_proto::presence::DeviceId,
    identity: &std::path::Path,
) -> Result<()> {
    if !sig.relay_has(wzp_proto::signal::FEATURE_DEVICES) {
        return Ok(());
    }
    match sig.replaced() {
        // The same device registered again: a twin of this one.
        Some(why) if why.contains(&hex::encode(device)) => Err(anyhow!(
            "stopped listening: the relay at {relay} says {why:?}. Another `listen` runs as this \
             device ({}, kept in {}): on this machine, or on one given a copy of this one's \
             identity files. Stop the other, or give it a device of its own (delete its copy \
             of the .device file).",
            hex::encode(device),
            crate::device::device_path(identity).display()
        )),
        // Past the relay's devices per person, this one was silent longest.
        Some(why) => Err(anyhow!(
            "stopped listening: the relay at {relay} says {why:?}. Stop a device you no \
             longer use, then start this one again."
        )),
        None => Ok(()),
    }
}

/// Says who calls: whether a contact (verified or not), and a warning when
/// the alias (the caller's claim) is or looks like a contact's name on
/// another fingerprint. Returns the caller's contact entry.
pub(super) fn describe_caller(call: &IncomingCall, contacts: &Contacts) -> Option<Contact> {
    let caller = call.caller();
    let contact = contacts.by_fingerprint(&caller).cloned();
    if let Some(claimed) = contacts.impersonated(call.caller_alias(), &caller) {
        let alias = call.caller_alias().unwrap_or_default();
        let same = alias.trim().to_lowercase() == claimed.name.to_lowercase();
        println!(
            "warning: the caller calls itself \"{}\", {} your contact {}, \
             but is not {}'s fingerprint ({})",
            crate::lookalike::reveal(alias),
            if same {
                "the name of"
            } else {
                "a name that looks like"
            },
            claimed.name,
            claimed.name,
            claimed.fingerprint
        );
    }
    match &contact {
        Some(c) => println!(
            "the caller is your contact {}{}",
            c.name,
            if c.verified {
                " (verified)"
            } else {
                " (not verified)"
            }
        ),
        None => println!("the caller is not one of your contacts"),
    }
    contact
}

/// A waiting call's caller as a line names it: the contact's name, else
/// the fingerprint and what it says it is.
pub(super) fn call_name(w: &Waiting) -> String {
    match &w.contact {
        Some(c) => c.name.clone(),
        None => super::direct::caller_words(&w.call.caller(), w.call.caller_alias()),
    }
}

/// Starts `--on-call`'s command for a call from `caller` (not waited for:
/// a slow notifier never holds the call up). The caller goes in the
/// environment only, so nothing it claims can become shell text.
pub(super) fn on_call(
    cmd: &str,
    caller: &wzp_proto::Fingerprint,
    name: Option<&str>,
    alias: Option<&str>,
    rings: bool,
) {
    let started = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WZP_CALLER", caller.to_string())
        .env("WZP_CALLER_NAME", name.unwrap_or_default())
        .env("WZP_CALLER_ALIAS", alias.unwrap_or_default())
        .env("WZP_RINGS", if rings { "1" } else { "0" })
        .stdin(std::process::Stdio::null())
        .spawn();
    match started {
        // Reaped off this thread: the ringing does not wait for it.
        Ok(mut child) => {
            std::thread::spawn(move || {
                if let Ok(status) = child.wait() {
                    if !status.success() {
                        eprintln!("warning: --on-call exited with {status}");
                    }
                }
            });
        }
        Err(e) => eprintln!("warning: --on-call could not start: {e}"),
    }
}
