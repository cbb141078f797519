//! `wzp-client call WHO --relay ADDR`: call a person by fingerprint or by
//! contact name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use wzp_proto::direct_call::{random_call_id, CallEvent, OutgoingCall};
use wzp_proto::direct_path::Role;
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::Fingerprint;

use super::direct::{
    flush, run_media, Held, MediaArgs, RelayArgs, UserInput, EXIT_BUSY, EXIT_FAILED,
    EXIT_NOT_ONLINE, EXIT_NO_ANSWER, EXIT_REJECTED,
};
use super::listen::{after_media, run_line, Accept, LineCtx, LineState};
use crate::contacts::{Contact, Contacts};
use crate::history::{self, Dir, Entry, Outcome};
use crate::signal::{MappingTest, SignalConn};

pub const CALL_EXAMPLES: &str = "\
Examples:
  wzp-client call 3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b --relay 203.0.113.7:4433
      Call a person by fingerprint (`wzp-client identity` prints yours):
      microphone in, speaker out. Both ends print the same `SAS: CODE`.
  wzp-client call alice --relay 203.0.113.7:4433
      Call a contact by name (`wzp-client contacts add alice FINGERPRINT`).
  wzp-client call FP --relay 127.0.0.1:4433 --input talk.wav --output heard.wav --duration 10s
      Headless: send a WAV, record the other side, hang up after 10 s.
  wzp-client call FP --relay 127.0.0.1:4433 --relay-only
      Keep the media on the relay even when the callee shares its address
      (by default it goes straight to a trusting callee while that works,
      and back through the relay when that path breaks).
  wzp-client call alice --relay 203.0.113.7:4433 --muted
      Start muted. During a call `m` mutes and unmutes the microphone, `q`
      hangs up; `pkill -USR1 wzp-client` mutes, `-USR2` unmutes.
  wzp-client call alice --relay 203.0.113.7:4433
      In a terminal, another caller rings here as a waiting call while you
      talk: `a` ends this call and answers, `s` holds this call and answers
      (then `s` swaps between the two, `c` joins them, `h` holds), `d`
      declines. The command ends with its last call. `--call-waiting` does
      the same with the keys on a standard input that is not a terminal.
  wzp-client call alice --relay 203.0.113.7:4433 --leave-message
      If alice does not answer (away, busy, declining, not picking up),
      leave her a voice message from the microphone (Ctrl-C ends it, 30 s
      at most; `--leave-message 60s` for longer); `wzp-client messages`
      on her side fetches it.

Exit status:
  0  the call was answered and ran
  1  an error (bad arguments, relay unreachable, identity unreadable, ...)
  3  rejected: the callee declined
  4  not online: nobody with that fingerprint is registered at the relay
  5  busy: the callee is in another call
  6  no answer: the call rang until the relay's ringing timeout
  7  the call failed after the offer (hung up before it was answered, or
     the key exchange did not verify)";

#[derive(clap::Args)]
pub struct CallArgs {
    /// Who to call: a fingerprint (`xxxx:xxxx:...`) or a contact's name
    /// (`wzp-client contacts`).
    #[arg(value_name = "WHO")]
    pub who: String,
    /// Contacts file. Default ~/.wzp/contacts.toml.
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub media: MediaArgs,
    #[command(flatten)]
    pub history: super::history::HistoryArgs,
    /// When the call is not answered (not online, busy, declined, no
    /// answer), leave a voice message instead, up to this long (`30s` when
    /// no length is given; at most 120 s): recorded from `--input` (a
    /// microphone records until Ctrl-C or the length), sealed to the person
    /// and kept by their relay, as `wzp-client message` does.
    #[arg(
        long,
        value_name = "LENGTH",
        num_args = 0..=1,
        default_missing_value = "30s",
        value_parser = super::parse_duration_arg
    )]
    pub leave_message: Option<Duration>,
    /// Let another caller ring here while the call runs, as a waiting
    /// call (`a` ends this call and answers it, `s` holds this call and
    /// answers it, then `s` swaps and `c` joins the two, `d` declines; as in
    /// `listen`). On in a terminal; this turns it on where standard input
    /// is not one, and reads the keys from it (a program at the keys).
    #[arg(long)]
    pub call_waiting: bool,
}

/// What to do with the SAS the call prints, for the person called.
pub fn sas_hint(contact: Option<&Contact>, fp: &Fingerprint) -> String {
    match contact {
        Some(c) if c.verified => format!(
            "{} is a verified contact: the SAS both of you read should be the same as ever",
            c.name
        ),
        Some(c) => format!(
            "{} is a contact, not verified yet: if you both read the same SAS, \
             `wzp-client contacts verify {}`",
            c.name, c.name
        ),
        None => format!(
            "{fp} is not one of your contacts: if you both read the same SAS, \
             `wzp-client contacts add NAME {fp} --verified`"
        ),
    }
}

/// Runs `call`; returns the process exit status.
pub fn call_cmd(args: CallArgs) -> Result<i32> {
    let contacts_path = super::contacts::contacts_path(args.contacts.clone())?;
    let contacts = Contacts::load(&contacts_path)?;
    let (target, contact) = contacts.resolve(&args.who)?;
    let contact = contact.cloned();
    let relay = args.relay.options()?;
    let identity = relay.identity()?;
    if target == identity.fingerprint() {
        return Err(anyhow!(
            "{target} is your own fingerprint: call someone else"
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    // A person at the keys may take a second call while in this one.
    let takes_waiting = args.call_waiting || crate::call::controls::interactive();
    let controls = Arc::new(crate::call::controls::Controls::new(
        args.media.muted,
        args.call_waiting,
    )?);
    if let Some(d) = args.leave_message {
        let max = Duration::from_secs((wzp_proto::voice_message::MAX_FRAMES / 50) as u64);
        if d.is_zero() || d > max {
            return Err(anyhow!(
                "--leave-message {d:?}: a voice message is 1 ms..={} s",
                max.as_secs()
            ));
        }
    }
    let history = args.history.open()?;
    let line_history = history.clone();
    let message_history = args.history.open()?;
    let record = move |at: u64, outcome: Outcome, secs: u64| {
        history.record(&Entry {
            at,
            dir: Dir::Out,
            peer: target,
            alias: None,
            outcome,
            secs,
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    rt.block_on(async move {
        let (mut sig, relay_fp) = SignalConn::open(&relay).await?;
        sig.set_mapping_test(if args.media.relay_only {
            MappingTest::Off
        } else {
            MappingTest::Background
        });
        // A device of its own for the call's length: it replaces no
        // `listen` of this person, on this machine or another.
        let device = crate::device::random()?;
        let reg = sig
            .register(
                &identity,
                relay_fp,
                args.media.alias.clone(),
                Some(device),
                takes_waiting,
            )
            .await?;
        let call_id = random_call_id().map_err(|e| anyhow!("no randomness for a call id: {e}"))?;
        let eph = EphemeralKey::random().map_err(|e| anyhow!("no randomness for a key: {e}"))?;
        let mut call =
            OutgoingCall::start(&identity, eph, call_id, target, args.media.alias.clone())
                .map_err(|e| anyhow!("{e}"))?;
        // For a direct path: a trusting callee learns where to punch
        // through its NAT towards us (docs/OPERATIONS.md, "The direct path").
        if !args.media.relay_only {
            let local = crate::nat::own_local_addrs(
                sig.endpoint(),
                sig.conn.remote_address(),
                reg.observed_addr,
            );
            call.share_address(reg.observed_addr, &local);
        }
        match &contact {
            Some(c) => println!("calling {} ({target}) via {}", c.name, relay.relay),
            None => println!("calling {target} via {}", relay.relay),
        }
        flush(&mut sig, &mut call).await?;
        let offered = history::now();
        let mut cancelled = false;
        // The ringback on the speaker while the far end rings; stopped
        // (its device closed) before the call's graph opens it.
        let mut ringback = None;
        let outcome = loop {
            // Ctrl-C (or `q`) while it rings takes the call back.
            let msg = tokio::select! {
                m = sig.recv() => m?,
                _ = async {
                    while !stop.load(Ordering::Relaxed) && !controls.take_hangup() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } => {
                    call.hangup();
                    let _ = flush(&mut sig, &mut call).await;
                    cancelled = true;
                    println!("hung up before {target} answered");
                    break Err(EXIT_FAILED);
                }
            };
            let Some(msg) = msg else {
                return Err(sig.closed_why("calling"));
            };
            if super::direct::missed_call(
                &msg,
                "while you were calling",
                None,
                Some(&contacts_path),
            ) {
                continue;
            }
            let ev = call.handle(&msg);
            flush(&mut sig, &mut call).await?;
            match ev {
                None | Some(CallEvent::PeerPath(_)) | Some(CallEvent::Hold(_)) => continue,
                Some(CallEvent::Ringing) => {
                    if call.rings_waiting() {
                        println!(
                            "ringing: {target} is in another call, where this one rings as a \
                             waiting call (they may end that call to answer)"
                        );
                    } else {
                        println!("ringing");
                    }
                    if ringback.is_none() {
                        ringback = args.media.ring_tone(crate::call::ring::RINGBACK);
                    }
                }
                Some(CallEvent::Answered(ready)) => break Ok(ready),
                Some(CallEvent::Rejected) => {
                    println!("rejected: {target} declined the call");
                    break Err(EXIT_REJECTED);
                }
                Some(CallEvent::NotOnline) => {
                    println!("not online: {target} is not registered at {}", relay.relay);
                    break Err(EXIT_NOT_ONLINE);
                }
                Some(CallEvent::Busy) => {
                    println!("busy: {target} is in another call");
                    break Err(EXIT_BUSY);
                }
                Some(CallEvent::NoAnswer) => {
                    println!("no answer from {target}");
                    break Err(EXIT_NO_ANSWER);
                }
                Some(CallEvent::HungUp { reason, message }) => {
                    println!(
                        "the call ended before it was answered: {}",
                        message.unwrap_or_else(|| format!("{reason:?}").to_lowercase())
                    );
                    break Err(EXIT_FAILED);
                }
                Some(CallEvent::Failed { error }) => {
                    println!("the call failed: {error}");
                    break Err(EXIT_FAILED);
                }
            }
        };
        drop(ringback);
        let ready = match outcome {
            Ok(ready) => ready,
            Err(status) => {
                let unreached = matches!(
                    status,
                    EXIT_NOT_ONLINE | EXIT_BUSY | EXIT_NO_ANSWER | EXIT_REJECTED
                );
                let keeps = sig.relay_has(wzp_proto::signal::FEATURE_VOICE_MESSAGES);
                // Whether a message can be left, asked before anyone speaks.
                let leave = match args.leave_message {
                    Some(max) if unreached && keeps => {
                        match super::message::key_of(&mut sig, &target, &args.who, &relay.relay)
                            .await
                        {
                            Ok(_) => Some(max),
                            Err(e) => {
                                eprintln!("no voice message left: {e:#}");
                                None
                            }
                        }
                    }
                    Some(_) if unreached => {
                        eprintln!(
                            "no voice message left: the relay at {} keeps none",
                            relay.relay
                        );
                        None
                    }
                    _ => None,
                };
                if unreached && keeps && args.leave_message.is_none() {
                    println!(
                        "leave a voice message: wzp-client message {} --relay {} \
                         (or call with --leave-message)",
                        args.who, relay.relay
                    );
                }
                record(
                    offered,
                    match status {
                        EXIT_REJECTED => Outcome::Rejected,
                        EXIT_NOT_ONLINE => Outcome::NotOnline,
                        EXIT_BUSY => Outcome::Busy,
                        EXIT_NO_ANSWER => Outcome::NoAnswer,
                        _ if cancelled => Outcome::Cancelled,
                        _ => Outcome::Failed,
                    },
                    0,
                );
                sig.close().await;
                if let Some(max) = leave {
                    let input = args.media.input.clone();
                    let left = tokio::task::block_in_place(|| {
                        super::message::capture(&input, max)
                            .and_then(|pcm| super::message::encode(&pcm))
                    });
                    let left = match left {
                        Ok(frames) => {
                            super::message::deliver(
                                &relay,
                                &identity,
                                target,
                                &args.who,
                                &frames,
                                &message_history,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = left {
                        eprintln!("no voice message left: {e:#}");
                    }
                }
                return Ok(status);
            }
        };
        println!("answered by {} (room {})", ready.peer, ready.room);
        println!("{}", sas_hint(contact.as_ref(), &target));
        let began = std::time::Instant::now();
        let with = contact
            .as_ref()
            .map_or(target.to_string(), |c| c.name.clone());
        let mut state = LineState::default();
        let ended = run_media(
            &mut sig,
            &mut call,
            &ready,
            &relay,
            &args.media,
            Some((Role::Dialer, reg.observed_addr)),
            &UserInput {
                stop: stop.clone(),
                controls: controls.clone(),
                with: with.clone(),
                missed_to: takes_waiting.then(|| line_history.clone()),
                contacts: Some(contacts_path.clone()),
                takes_waiting,
                on_call: None,
            },
            &mut state.held,
            None,
        )
        .await;
        let (end, waiting) = match ended {
            Ok(e) => e,
            Err(e) => {
                record(offered, Outcome::Answered, began.elapsed().as_secs());
                return Err(e);
            }
        };
        // This call (kept in the history when it ends), and what came
        // while it ran: a waiting call taken, this one held or joined.
        let this = Held {
            call: Box::new(call),
            ready: *ready,
            with,
            peer_holds: false,
            peer: target,
            alias: None,
            dir: Dir::Out,
            offered,
            began,
        };
        after_media(end, waiting, this, state.line(), &line_history);
        let cx = LineCtx {
            relay: &relay,
            identity: &identity,
            media: &args.media,
            accept: Accept::Ask,
            once: false,
            on_call: None,
            stop,
            controls,
            history: line_history.clone(),
            contacts_path: contacts_path.clone(),
            takes_waiting,
            observed_addr: reg.observed_addr,
            device,
            // The line ends with its last call: `call` waits for no one.
            idle_exit: true,
            next_relay: None,
        };
        let ran = run_line(&cx, &mut sig, state).await;
        sig.close().await;
        ran?;
        Ok(0)
    })
}
