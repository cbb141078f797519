//! What `call` and `listen` share: the relay and media arguments, the exit
//! statuses, and running an answered call's media while the signal
//! connection watches for the other side's hangup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use wzp_proto::direct_call::{CallEvent, CallReady, IncomingCall, OutgoingCall};
use wzp_proto::direct_path::Role;
use wzp_proto::path_addrs::PathAddrs;
use wzp_proto::signal::SignalMessage;

use super::{parse_duration_arg, parse_sets};
use crate::call::{self, CallOptions, DirectMedia};
use crate::nat::DirectPath;
use crate::signal::{RelayOptions, SignalConn};
use crate::trust::or_home;

/// Exit status: the callee declined.
pub const EXIT_REJECTED: i32 = 3;
/// Exit status: nobody with that fingerprint is online at the relay.
pub const EXIT_NOT_ONLINE: i32 = 4;
/// Exit status: the callee is in another call.
pub const EXIT_BUSY: i32 = 5;
/// Exit status: the call rang until the relay's ringing timeout.
pub const EXIT_NO_ANSWER: i32 = 6;
/// Exit status: the call failed after the offer (hung up before it was
/// answered, or the key exchange did not verify).
pub const EXIT_FAILED: i32 = 7;

/// Which relay, and who we are.
#[derive(clap::Args, Clone, Debug)]
pub struct RelayArgs {
    /// Relay address, HOST:PORT [default: $WZP_RELAY]. `listen` takes
    /// several (`--relay A,B`, or repeated) of federated relays: it
    /// registers at the first that answers, and at the next when its relay
    /// goes away.
    #[arg(long, value_delimiter = ',')]
    pub relay: Vec<String>,
    /// Identity seed file (created on first use, mode 0600). Default ~/.wzp/identity.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// The relay's TLS fingerprint to pin. Without it, the fingerprint seen on
    /// first contact is recorded in the known-relays file and pinned after.
    /// With several relays, one per relay in the same order, or none.
    #[arg(long, value_delimiter = ',')]
    pub relay_fingerprint: Vec<String>,
    /// Known-relays file. Default ~/.wzp/known_relays.
    #[arg(long)]
    pub known_relays: Option<PathBuf>,
}

impl RelayArgs {
    /// The one relay of a command that goes through one (an error naming
    /// the command when several are given).
    pub fn options(&self) -> Result<RelayOptions> {
        let mut all = self.all_options()?;
        if all.len() > 1 {
            bail!(
                "{} relays given: this command goes through one (`join` and `listen` take several)",
                all.len()
            );
        }
        Ok(all.remove(0))
    }

    /// Every relay given, in order, each with its pinned fingerprint (at
    /// least one).
    pub fn all_options(&self) -> Result<Vec<RelayOptions>> {
        let relays = super::relay_addresses(&self.relay)?;
        let fingerprints = super::relay_fingerprints(&self.relay_fingerprint, relays.len())?;
        let identity = or_home(self.identity.clone(), "identity")?;
        let known_relays = or_home(self.known_relays.clone(), "known_relays")?;
        Ok(relays
            .into_iter()
            .zip(fingerprints)
            .map(|(relay, relay_fingerprint)| RelayOptions {
                relay,
                identity: identity.clone(),
                relay_fingerprint,
                known_relays: known_relays.clone(),
            })
            .collect())
    }
}

/// What a call sends and where it plays.
#[derive(clap::Args, Clone, Debug)]
pub struct MediaArgs {
    /// What to send: `tone`, `tone:FREQ`, `builtin`, a WAV file, `mic` (the
    /// default device) or `mic:NAME` (`wzp-client devices` lists them).
    #[arg(long, default_value = "mic")]
    pub input: String,
    /// Where the call goes: a WAV file, `speaker` (the default device),
    /// `speaker:NAME`, or `null`. With `--input
    /// mic` and `speaker` the speaker's echo is cancelled in the microphone.
    #[arg(long, default_value = "speaker")]
    pub output: String,
    /// Record the call to this WAV file (48 kHz mono: what you send, as the
    /// others hear it, mixed with what you hear). The others are told: their
    /// room line shows you as `(recording)`. An existing file is never
    /// replaced: the recording takes the next free name (`call-2.wav`, ...).
    #[arg(long, value_name = "FILE.wav")]
    pub record: Option<PathBuf>,
    /// End each call after this long: `10s`, `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Name shown to the other side (at most 64 bytes).
    #[arg(long, value_parser = super::parse_alias)]
    pub alias: Option<String>,
    /// Fill a call graph placeholder (repeatable): profile, fec_ratio, jb_min, ...
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Do not ask for real-time (SCHED_FIFO) priority.
    #[arg(long)]
    pub no_realtime: bool,
    /// Show, once a second, what the call sends and why (tier, codec,
    /// redundancy, what the receivers report), what it hears (delay,
    /// concealment and its kinds per sender), the quality controller's last
    /// decisions, and the per-stage table.
    #[arg(long)]
    pub top: bool,
    /// Keep the call's media on the relay: no direct path between the two
    /// parties (a callee then shares no address, even with `--accept
    /// trusted`). By default the caller dials the address a trusting
    /// callee shared and the media goes straight between them while that
    /// path is up.
    #[arg(long)]
    pub relay_only: bool,
    /// Start each call with the microphone muted (the other side hears
    /// silence). On a terminal `m` mutes and unmutes, `q` hangs up;
    /// SIGUSR1 mutes, SIGUSR2 unmutes.
    #[arg(long)]
    pub muted: bool,
    /// Play no ring tone: by default, with `--output speaker`, `listen`'s
    /// speaker rings while a call waits to be answered (`--accept ask`) and
    /// `call`'s plays the ringback while the far end rings.
    #[arg(long, conflicts_with = "ring_on")]
    pub no_ring_tone: bool,
    /// Where the ring tone plays: `speaker` or `speaker:NAME` (`wzp-client
    /// devices` lists them), e.g. the laptop's speakers while the call goes
    /// to a headset. By default the call's own `--output`.
    #[arg(long, value_name = "DEVICE", value_parser = parse_ring_on)]
    pub ring_on: Option<String>,
    /// How loud the ring tone plays: its peak in dBFS, -60..=0 (e.g. -30
    /// for a quiet office) [default: -16].
    #[arg(long, value_name = "DB", value_parser = parse_ring_level, allow_hyphen_values = true)]
    pub ring_level: Option<f64>,
}

/// `--ring-level`: dBFS, -60..=0.
fn parse_ring_level(s: &str) -> std::result::Result<f64, String> {
    match s.trim().trim_end_matches("dB").trim().parse::<f64>() {
        Ok(v) if (-60.0..=0.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: a peak level in dBFS, -60..=0 (e.g. -30)")),
    }
}

/// `--ring-on`: a speaker, not a file or `null`.
fn parse_ring_on(s: &str) -> std::result::Result<String, String> {
    if crate::call::graph::speaker(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is no speaker: use `speaker` or `speaker:NAME` (`wzp-client devices` lists them), or --no-ring-tone for none"
        ))
    }
}

impl MediaArgs {
    /// A ring tone of `pattern` on `--ring-on`, else on the call's speaker,
    /// unless `--no-ring-tone` or that output is no speaker (stopped when
    /// dropped).
    pub fn ring_tone(&self, pattern: &str) -> Option<crate::call::ring::RingTone> {
        if self.no_ring_tone {
            return None;
        }
        let on = self.ring_on.as_deref().unwrap_or(&self.output);
        crate::call::ring::RingTone::start(
            on,
            pattern,
            self.ring_level
                .unwrap_or(crate::call::ring::DEFAULT_RING_LEVEL),
        )
    }
}

/// The two direct-call state machines, as the media runner drives them.
pub trait CallMachine {
    fn handle(&mut self, msg: &SignalMessage) -> Option<CallEvent>;
    fn poll_send(&mut self) -> Option<SignalMessage>;
    fn hangup(&mut self);
    fn is_ended(&self) -> bool;
    fn share_path(&mut self, addrs: &PathAddrs, nonce: [u8; 12]) -> bool;
    fn hold(&mut self, held: bool, nonce: [u8; 12]) -> bool;
}

macro_rules! call_machine {
    ($t:ty) => {
        impl CallMachine for $t {
            fn handle(&mut self, msg: &SignalMessage) -> Option<CallEvent> {
                <$t>::handle(self, msg)
            }
            fn poll_send(&mut self) -> Option<SignalMessage> {
                <$t>::poll_send(self)
            }
            fn hangup(&mut self) {
                <$t>::hangup(self)
            }
            fn is_ended(&self) -> bool {
                <$t>::is_ended(self)
            }
            fn share_path(&mut self, addrs: &PathAddrs, nonce: [u8; 12]) -> bool {
                <$t>::share_path(self, addrs, nonce)
            }
            fn hold(&mut self, held: bool, nonce: [u8; 12]) -> bool {
                <$t>::hold(self, held, nonce)
            }
        }
    };
}
call_machine!(OutgoingCall);
call_machine!(IncomingCall);

/// Sends whatever the call machine queued.
pub async fn flush(sig: &mut SignalConn, call: &mut dyn CallMachine) -> Result<()> {
    while let Some(m) = call.poll_send() {
        sig.send(&m).await?;
    }
    Ok(())
}

/// How an answered call ended.
/// Opens the callee's signalling endpoint to the caller's dial; whether it
/// could.
fn open_to_dialer(sig: &SignalConn) -> bool {
    match crate::nat::open_to_dialer(sig.endpoint()) {
        Ok(()) => true,
        Err(e) => {
            println!("no direct path: {e:#}");
            false
        }
    }
}

/// How long a caller that sealed its addresses for the callee waits for
/// the callee's before it says none came.
const PEER_PATH_WAIT: Duration = Duration::from_secs(5);

/// Sends this side's addresses sealed for the peer; whether they went.
async fn share_path(
    sig: &mut SignalConn,
    call: &mut dyn CallMachine,
    mine: &PathAddrs,
) -> Result<bool> {
    if mine.is_empty() {
        return Ok(false);
    }
    // With a mapping flag, the same addresses follow without it: a peer of
    // a build that predates the flag refuses the first and reads the
    // second; a newer one acts on the first (docs/WIRE.md §10.1).
    let mut queued = false;
    for addrs in
        std::iter::once(mine.clone()).chain(mine.mapping.is_known().then(|| mine.without_mapping()))
    {
        queued |= call.share_path(&addrs, nonce()?);
    }
    flush(sig, call).await?;
    Ok(queued)
}

/// A fresh nonce for what a party seals for the other.
fn nonce() -> Result<[u8; 12]> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness for a nonce: {e}"))?;
    Ok(nonce)
}

fn describe(a: &PathAddrs) -> String {
    let mut parts: Vec<String> = a.observed.iter().map(|o| o.to_string()).collect();
    if !a.local.is_empty() {
        let l: Vec<String> = a.local.iter().map(|x| x.to_string()).collect();
        parts.push(format!("own network {}", l.join(", ")));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

#[derive(Debug)]
pub enum CallEnd {
    /// We ended it (duration, Ctrl-C).
    Local,
    /// The other side or the relay hung up.
    Remote(String),
    /// The signal connection to the relay was lost.
    SignalLost(String),
    /// This end put the call on hold to answer its waiting call or to take
    /// back the call it held (`s`): the call goes on, its media stopped.
    /// `peer_holds`: the other party holds it too.
    Held { peer_holds: bool },
    /// This end joins the call with the one it holds (`c`): both go on,
    /// in one (its media restarts with the other call's).
    Join { peer_holds: bool },
}

/// How long a call held to take another (`s`) goes on sending silence
/// before its media stops: the far decoder's comfort noise, which goes on
/// while nothing comes, then follows silence, not the last word said.
const HOLD_DRAIN: Duration = Duration::from_millis(300);

/// A call this device holds while it is in another (`s`): its machine and
/// keys, and what its history entry needs when it ends. Its media graph is
/// stopped; taking it back starts one again with the same keys (a new
/// random sender id, so no nonce repeats), through the relays.
pub struct Held {
    /// The call's exchange: an incoming call, or one this end placed.
    pub call: Box<dyn CallMachine>,
    pub ready: CallReady,
    /// What the person calls the other party.
    pub with: String,
    /// The other party holds the call too.
    pub peer_holds: bool,
    /// The other party, what it calls itself, and who called (for the
    /// history).
    pub peer: wzp_proto::Fingerprint,
    pub alias: Option<String>,
    pub dir: crate::history::Dir,
    /// When it was offered, and answered (for the history).
    pub offered: u64,
    pub began: Instant,
}

impl Held {
    /// Keeps the call's entry in the history, answered, as long as it ran.
    pub fn record(&self, history: Option<&crate::history::History>) {
        if let Some(h) = history {
            h.record(&crate::history::Entry {
                at: self.offered,
                dir: self.dir,
                peer: self.peer,
                alias: self.alias.clone(),
                outcome: crate::history::Outcome::Answered,
                secs: self.began.elapsed().as_secs(),
            });
        }
    }
}

/// How [`run_media`] starts a call held before (`None`: a call just
/// answered or set up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// This end still holds it (the other call ended): silent both ways
    /// until `h`. Else it is taken back, and the other party told.
    pub held_here: bool,
    /// The other party holds it.
    pub peer_holds: bool,
    /// Tell the other party it is taken back (it was held: `s`); a call
    /// that goes on after a joined one ended was never held.
    pub tell: bool,
}

/// The person at this end: what they can do to a call (end the process:
/// Ctrl-C, SIGTERM, `stop`; mute or hang up: `controls`), and what they
/// call the other side (`with`: a contact's name, else the fingerprint).
pub struct UserInput {
    pub stop: Arc<AtomicBool>,
    pub controls: Arc<call::controls::Controls>,
    pub with: String,
    /// Where a call missed meanwhile is recorded (the person's history;
    /// a `call` that takes no waiting call only says it).
    pub missed_to: Option<crate::history::History>,
    /// The contacts file, read when a call is missed: a blocked caller's
    /// are not said.
    pub contacts: Option<PathBuf>,
    /// This device registered taking waiting calls: an offer that comes
    /// during the call rings as one (`a` ends this call and answers it, `s`
    /// holds this call and answers it, `d` declines it).
    pub takes_waiting: bool,
    /// `listen --on-call`'s command, run as a waiting call comes in.
    pub on_call: Option<String>,
}

/// A call that came while this device was in one (call waiting): returned
/// by [`run_media`] when the person ended the call to answer it
/// (`answered`), or when the call ended while it still rang.
pub struct Waiting {
    pub call: IncomingCall,
    /// The person ended the call in progress to answer this one, or held
    /// it (`keep`).
    pub answered: bool,
    /// Answered keeping the call in progress, on hold (`s`).
    pub keep: bool,
    /// The caller's contact entry, read when it came.
    pub contact: Option<crate::contacts::Contact>,
}

/// An offer that came during a call, on a device taking waiting calls:
/// a blocked caller is declined at once (and kept in the history as
/// blocked), a second while one already waits is declined, anyone else
/// rings as the waiting call. Returns it when it rings.
async fn waiting_offer(
    sig: &mut SignalConn,
    msg: &SignalMessage,
    user: &UserInput,
    one_waits: bool,
) -> Result<Option<Waiting>> {
    let mut call = match IncomingCall::from_offer(msg) {
        Ok(c) => c,
        Err(e) => {
            if let Some(refusal) = wzp_proto::direct_call::refusal(msg, &e) {
                sig.send(&refusal).await?;
            }
            println!("refused a malformed offer: {e}");
            return Ok(None);
        }
    };
    let contacts = user
        .contacts
        .as_deref()
        .and_then(|p| crate::contacts::Contacts::load(p).ok());
    let caller = call.caller();
    let who = caller_words(&caller, call.caller_alias());
    let record = |outcome| {
        if let Some(h) = &user.missed_to {
            h.record(&crate::history::Entry {
                at: crate::history::now(),
                dir: crate::history::Dir::In,
                peer: caller,
                alias: call.caller_alias().map(str::to_string),
                outcome,
                secs: 0,
            });
        }
    };
    if contacts
        .as_ref()
        .is_some_and(|c| c.is_blocked(&caller).is_some())
    {
        record(crate::history::Outcome::Blocked);
        call.reject();
        flush(sig, &mut call).await?;
        return Ok(None);
    }
    if one_waits {
        record(crate::history::Outcome::Missed);
        println!("missed a call from {who} while in this call (another call waits already)");
        call.reject();
        flush(sig, &mut call).await?;
        return Ok(None);
    }
    let bell = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        "\x07"
    } else {
        ""
    };
    // A key pressed before it came answers nothing (cleared before the
    // person is asked, so no answer given after it is lost).
    user.controls.take_answer();
    println!("call waiting{bell}: {who} is calling");
    let contact = contacts
        .as_ref()
        .and_then(|c| super::listen::describe_caller(&call, c));
    if let Some(cmd) = &user.on_call {
        super::listen::on_call(
            cmd,
            &caller,
            contact.as_ref().map(|c| c.name.as_str()),
            call.caller_alias(),
            true,
        );
    }
    if sig.relay_has(wzp_proto::signal::FEATURE_KEEP_CALL) {
        println!("a ends this call and answers the waiting one, s holds this call and answers it, d declines it");
    } else {
        println!("a ends this call and answers the waiting one, d declines it");
    }
    Ok(Some(Waiting {
        call,
        answered: false,
        keep: false,
        contact,
    }))
}

/// `FP`, or `FP (says "ALIAS")`: a caller as a notice names it (the alias
/// is its claim, shown with anything that could pass for another name
/// revealed).
pub fn caller_words(fp: &wzp_proto::Fingerprint, alias: Option<&str>) -> String {
    match alias.filter(|a| !a.is_empty()) {
        Some(a) => format!("{fp} (says \"{}\")", crate::lookalike::reveal(a)),
        None => fp.to_string(),
    }
}

/// A `missed_call` (someone called while this person was in another call,
/// and heard busy): said, and recorded as missed in `history` if given;
/// one from a caller the contacts file (read now) blocks is neither.
/// Returns whether `msg` was one.
pub fn missed_call(
    msg: &SignalMessage,
    during: &str,
    history: Option<&crate::history::History>,
    contacts: Option<&std::path::Path>,
) -> bool {
    let SignalMessage::MissedCall {
        caller_fingerprint,
        caller_alias,
        ..
    } = msg
    else {
        return false;
    };
    let blocked = contacts
        .and_then(|p| crate::contacts::Contacts::load(p).ok())
        .is_some_and(|c| c.is_blocked(caller_fingerprint).is_some());
    if blocked {
        return true;
    }
    println!(
        "missed a call from {} {during} (they heard busy)",
        caller_words(caller_fingerprint, caller_alias.as_deref())
    );
    if let Some(h) = history {
        h.record(&crate::history::Entry {
            at: crate::history::now(),
            dir: crate::history::Dir::In,
            peer: *caller_fingerprint,
            alias: caller_alias.clone(),
            outcome: crate::history::Outcome::Missed,
            secs: 0,
        });
    }
    true
}

/// Runs an answered call's media through the relay with the call's keys
/// until `--duration`, Ctrl-C, or the other side hangs up; then hangs up.
/// `held`: the call this device holds meanwhile (its signals are read
/// here too; Ctrl-C hangs it up); `resume`: this call was held before.
/// Ends without hanging up when the person holds this call to answer the
/// waiting one or to take the held one back ([`CallEnd::Held`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_media(
    sig: &mut SignalConn,
    call: &mut dyn CallMachine,
    ready: &CallReady,
    relay: &RelayOptions,
    media: &MediaArgs,
    direct: Option<(Role, Option<SocketAddr>)>,
    user: &UserInput,
    held: &mut Option<Held>,
    resume: Option<Resume>,
) -> Result<(CallEnd, Option<Waiting>)> {
    let (stop, controls) = (&user.stop, &user.controls);
    // A call taken back goes through the relays: its direct path closed
    // with its media, and both parties' addresses were shared once.
    let direct = direct.filter(|_| !media.relay_only && resume.is_none());
    if let Some(h) = held.as_ref() {
        println!("the call with {} is on hold: s swaps to it", h.with);
    }
    match resume {
        None => println!("SAS: {}", ready.sas),
        Some(r) => {
            controls.hold.set(r.held_here);
            controls.held_tone.set(r.peer_holds);
            if r.held_here {
                println!(
                    "the call with {} is still on hold: h takes it back, q hangs it up",
                    user.with
                );
            } else if !r.tell {
                println!("the call with {} goes on", user.with);
            } else {
                let told = if call.hold(false, nonce()?) {
                    flush(sig, call).await?;
                    " (they are told)"
                } else {
                    ""
                };
                println!("you took the call with {} back{told}", user.with);
            }
        }
    }
    // A call across relays: no relay passed the peer's addresses, so the
    // two parties seal theirs for each other (`call_path`), the caller
    // first, once the callee answered `accept_trusted`; the path starts
    // when the peer's arrive.
    // Where the relay sees this side now: one that moved since it
    // registered (QUIC followed it to its new address) holds an old address,
    // and a mapping test of the old network's NAT.
    let registered_at = direct.and_then(|(_, own)| own);
    let moved = matches!(
        (ready.observed_addr, registered_at),
        (Some(now), Some(then)) if now != then
    );
    let direct = direct.map(|(role, own)| (role, ready.observed_addr.or(own)));
    let relay_gave = ready.peer_direct_addr.is_some() || !ready.peer_local_addrs.is_empty();
    let sealed = direct.filter(|_| {
        !relay_gave && ready.accept_mode == wzp_proto::signal::AcceptMode::AcceptTrusted
    });
    let own_mapping = if moved {
        tracing::info!(?registered_at, now = ?ready.observed_addr, "this side moved since it registered");
        wzp_proto::mapping::Mapping::Unknown
    } else {
        sig.mapping()
    };
    let mine = sealed.map(|(_, own)| PathAddrs {
        observed: own,
        local: crate::nat::own_local_addrs(sig.endpoint(), sig.conn.remote_address(), own),
        mapping: own_mapping,
    });
    let (late_tx, late_rx) = tokio::sync::watch::channel(None::<PathAddrs>);
    let mut shared = false;
    if let (Some((Role::Dialer, _)), Some(mine)) = (sealed, &mine) {
        shared = share_path(sig, call, mine).await?;
    }
    // The caller dials the address a trusting callee shared; that callee
    // accepts on its signalling socket, the address it shared.
    let mut path = direct
        .filter(|(r, _)| *r == Role::Acceptor || relay_gave || sealed.is_some())
        .map(|(role, own_addr)| DirectPath {
            endpoint: sig.endpoint().clone(),
            role,
            peer_addr: ready.peer_direct_addr,
            peer_local: ready.peer_local_addrs.clone(),
            own_addr,
            own_mapping,
            peer_mapping: ready.peer_mapping,
            peer: ready.peer,
            call_id: ready.call_id.clone(),
            room: ready.room.clone(),
            late: sealed.map(|_| late_rx.clone()),
            raw: sig.raw().cloned(),
            sprayed: Arc::new(AtomicBool::new(false)),
        });
    // The callee takes connections before the caller can dial: here,
    // before the media starts (the caller dials at once); across relays,
    // once the caller's addresses came and before ours go back (so no
    // stranger waits in the queue before).
    let accepts = path.as_ref().is_some_and(|p| p.role == Role::Acceptor);
    let mut opened = false;
    if accepts && sealed.is_none() {
        opened = open_to_dialer(sig);
        if !opened {
            path = None;
        }
    }
    let call_stop = Arc::new(AtomicBool::new(false));
    let opts = direct_options(
        relay,
        media,
        ready,
        &user.with,
        path,
        call_stop.clone(),
        controls,
    )?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let media_thread = std::thread::Builder::new()
        .name("wzp-call".into())
        .spawn(move || {
            let r = call::run_call(opts);
            let _ = done_tx.send(());
            r
        })
        .map_err(|e| anyhow!("starting the call: {e}"))?;
    let mut end = CallEnd::Local;
    let mut waiting: Option<Waiting> = None;
    // Offers of other calls that came while this one ended, to a line that
    // takes no waiting call: the relay, done with this call, offered them;
    // they ring once this call is over.
    let mut after_this: Vec<SignalMessage> = Vec::new();
    // The beeps of a waiting call play under the call while one rings.
    let beeps = |on: bool| {
        controls.waiting_tone.set(on);
    };
    beeps(false);
    // The caller says once when the callee's sealed addresses never came
    // (a relay on the way predates them, or the callee shares none).
    let mut waiting_for_peer = (shared && sealed.is_some()).then(Instant::now);
    // Held to take another call: the graph stops once it has sent silence
    // for a while.
    let mut held_stop: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut done_rx => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if stop.load(Ordering::Relaxed) {
                    call_stop.store(true, Ordering::Relaxed);
                }
                if controls.take_hold() {
                    let held = !controls.hold.is_muted();
                    controls.hold.set(held);
                    // A relay older than holding is not sent what it
                    // would refuse; the hold is this end's all the same.
                    let relays_it = sig.relay_has(wzp_proto::signal::FEATURE_HOLD);
                    let tell = if !relays_it {
                        " (the relay is older than holding: they are not told)"
                    } else if call.hold(held, nonce()?) {
                        flush(sig, call).await?;
                        " (they are told)"
                    } else {
                        ""
                    };
                    if held {
                        println!("you put the call on hold: neither of you hears the other{tell}; h takes it back");
                    } else {
                        println!("you took the call back{tell}");
                    }
                }
                if controls.take_swap() && held_stop.is_none() {
                    let keeps = sig.relay_has(wzp_proto::signal::FEATURE_KEEP_CALL);
                    let to = match (waiting.as_mut().filter(|w| !w.answered), held.as_ref()) {
                        (Some(_), _) if !keeps => {
                            println!("the relay is older than keeping a call: a ends this call and answers the waiting one");
                            None
                        }
                        (Some(_), Some(_)) => {
                            println!("one call is on hold already: a ends this call and answers the waiting one");
                            None
                        }
                        (Some(w), None) => {
                            w.answered = true;
                            w.keep = true;
                            beeps(false);
                            Some(format!("to answer {}", super::listen::call_name(w)))
                        }
                        (None, Some(h)) => Some(format!("to take back the call with {}", h.with)),
                        (None, None) => None,
                    };
                    if let Some(to) = to {
                        // Silent at once; the graph stops and the other
                        // party hears the hold beeps.
                        controls.hold.set(true);
                        let told = if call.hold(true, nonce()?) {
                            flush(sig, call).await?;
                            " (they are told)"
                        } else {
                            ""
                        };
                        println!("holding the call with {}{told} {to}", user.with);
                        end = CallEnd::Held { peer_holds: controls.held_tone.is_open() };
                        held_stop = Some(Instant::now() + HOLD_DRAIN);
                    }
                }
                if controls.take_join() && held_stop.is_none() {
                    match held.as_ref() {
                        Some(h) => {
                            println!("joining the call with {} and the one with {}", user.with, h.with);
                            // Silent while the graph winds down (as for a
                            // hold), no notice: the call goes on at once.
                            controls.hold.set(true);
                            end = CallEnd::Join { peer_holds: controls.held_tone.is_open() };
                            held_stop = Some(Instant::now() + HOLD_DRAIN);
                        }
                        None => println!("c joins this call with one on hold: none is"),
                    }
                }
                if held_stop.is_some_and(|t| Instant::now() >= t) {
                    call_stop.store(true, Ordering::Relaxed);
                }
                if let Some(w) = waiting.as_mut().filter(|w| !w.answered) {
                    match controls.take_answer() {
                        Some(call::controls::Answer::Accept) => {
                            println!("ending this call to answer {}", super::listen::call_name(w));
                            w.answered = true;
                            beeps(false);
                            call_stop.store(true, Ordering::Relaxed);
                        }
                        Some(call::controls::Answer::Decline) => {
                            println!("declined the waiting call from {}", super::listen::call_name(w));
                            record_waiting(user, w, crate::history::Outcome::Declined);
                            w.call.reject();
                            flush(sig, &mut w.call).await?;
                            waiting = None;
                            beeps(false);
                        }
                        None => {}
                    }
                }
                if waiting_for_peer.is_some_and(|t| t.elapsed() >= PEER_PATH_WAIT) {
                    waiting_for_peer = None;
                    if late_tx.borrow().is_none() {
                        println!(
                            "no addresses from {} within {} s (a relay on the way may not carry \
                             them, or it shares none): the media stays on the relays",
                            ready.peer,
                            PEER_PATH_WAIT.as_secs()
                        );
                    }
                }
            }
            msg = sig.recv() => match msg {
                Ok(Some(m)) if missed_call(&m, "while in this call", user.missed_to.as_ref(), user.contacts.as_deref()) => {}
                Ok(Some(m)) if user.missed_to.is_some() && super::listen::voice_messages(&m) => {}
                Ok(Some(m)) if user.takes_waiting && matches!(&m, SignalMessage::DirectCallOffer { call_id, .. } if *call_id != ready.call_id) => {
                    if let Some(w) = waiting_offer(sig, &m, user, waiting.is_some()).await? {
                        waiting = Some(w);
                        beeps(true);
                    }
                }
                Ok(Some(m)) if matches!(&m, SignalMessage::DirectCallOffer { call_id, .. } if *call_id != ready.call_id) => {
                    after_this.push(m);
                }
                Ok(Some(m)) => {
                    // Each machine reads only what names its call.
                    held_reads(sig, held, &m, user.missed_to.as_ref()).await?;
                    if let Some(w) = waiting.as_mut() {
                        let ev = w.call.handle(&m);
                        flush(sig, &mut w.call).await?;
                        // An offer that came as this call ended rings the
                        // person's other devices too: one may take it.
                        let mut outcome = crate::history::Outcome::Missed;
                        let why = match ev {
                            Some(CallEvent::HungUp { reason, message }) => {
                                outcome = super::listen::elsewhere(reason).unwrap_or(outcome);
                                Some(message.unwrap_or_else(|| format!("{reason:?}").to_lowercase()))
                            }
                            Some(CallEvent::NoAnswer) => Some("it rang out unanswered".into()),
                            Some(CallEvent::Failed { error }) => Some(error.to_string()),
                            _ => None,
                        };
                        if let Some(why) = why {
                            println!("the waiting call from {} ended ({why})", super::listen::call_name(w));
                            record_waiting(user, w, outcome);
                            waiting = None;
                            beeps(false);
                        }
                    }
                    match call.handle(&m) {
                        Some(CallEvent::HungUp { reason, message }) => {
                            let why = message.unwrap_or_else(|| format!("{reason:?}").to_lowercase());
                            end = CallEnd::Remote(why);
                            call_stop.store(true, Ordering::Relaxed);
                        }
                        Some(CallEvent::Hold(on)) => {
                            controls.held_tone.set(on);
                            if let CallEnd::Held { peer_holds } = &mut end {
                                *peer_holds = on;
                            }
                            if on {
                                println!("{} put the call on hold", user.with);
                            } else {
                                println!("{} took the call back", user.with);
                            }
                        }
                        Some(CallEvent::PeerPath(addrs)) if sealed.is_some() && late_tx.borrow().is_none() => {
                            println!(
                                "{} shared its addresses for a direct path (sealed: {})",
                                ready.peer,
                                describe(&addrs)
                            );
                            // The callee answers the caller's with its own,
                            // ready for the caller's dial.
                            if let (false, Some(mine)) = (shared, &mine) {
                                opened = open_to_dialer(sig);
                                if opened {
                                    shared = share_path(sig, call, mine).await?;
                                }
                            }
                            let _ = late_tx.send(Some(addrs));
                        }
                        _ => {}
                    }
                    flush(sig, call).await?;
                }
                Ok(None) => {
                    end = CallEnd::SignalLost("the relay ended the signal stream".into());
                    call_stop.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    end = CallEnd::SignalLost(e.to_string());
                    call_stop.store(true, Ordering::Relaxed);
                }
            }
        }
        if matches!(end, CallEnd::SignalLost(_)) {
            // Nothing more to read: wait for the media to stop.
            let _ = (&mut done_rx).await;
            break;
        }
    }
    sig.read_again(after_this);
    let outcome = media_thread
        .join()
        .map_err(|_| anyhow!("the call's media thread panicked"))?;
    beeps(false);
    // The next call (`listen` takes call after call) starts neither held
    // nor beeping.
    controls.hold.set(false);
    controls.held_tone.set(false);
    if opened {
        crate::nat::close_to_dialer(sig.endpoint());
    }
    let goes_on = matches!(end, CallEnd::Held { .. } | CallEnd::Join { .. });
    if !call.is_ended() && (!goes_on || stop.load(Ordering::Relaxed)) {
        call.hangup();
        if !matches!(end, CallEnd::SignalLost(_)) {
            flush(sig, call).await?;
        }
        if goes_on {
            end = CallEnd::Local;
        }
    }
    if call.is_ended() && matches!(end, CallEnd::Held { .. } | CallEnd::Join { .. }) {
        // It ended as it was being held.
        end = CallEnd::Remote("it ended as you held it".into());
    }
    // Leaving, or the relay went: the held call ends too.
    if stop.load(Ordering::Relaxed) || outcome.is_err() || matches!(end, CallEnd::SignalLost(_)) {
        if let Some(mut h) = held.take() {
            h.call.hangup();
            if !matches!(end, CallEnd::SignalLost(_)) {
                flush(sig, h.call.as_mut()).await?;
            }
            println!("hung up the call on hold with {}", h.with);
            h.record(user.missed_to.as_ref());
        }
    }
    match &end {
        CallEnd::Held { .. } | CallEnd::Join { .. } => {}
        CallEnd::Local if waiting.as_ref().is_some_and(|w| w.answered) => {
            println!("hung up, for the waiting call")
        }
        CallEnd::Local => println!("hung up"),
        CallEnd::Remote(why) => println!("the other side hung up ({why})"),
        CallEnd::SignalLost(why) => println!("lost the relay ({why}); the call ended"),
    }
    if let Some(line) = outcome
        .as_ref()
        .ok()
        .and_then(|o| call::top::heard_line(&o.report))
    {
        println!("{line}");
    }
    // Leaving (Ctrl-C, SIGTERM, even after `a`), or the media failed: a
    // waiting call is declined (it would ring on a device that no longer
    // listens) and kept as missed.
    if let Some(mut w) = waiting.take_if(|_| stop.load(Ordering::Relaxed) || outcome.is_err()) {
        record_waiting(user, &w, crate::history::Outcome::Missed);
        w.call.reject();
        if !matches!(end, CallEnd::SignalLost(_)) {
            flush(sig, &mut w.call).await?;
        }
    }
    // The relay went: the waiting call went with it.
    if matches!(end, CallEnd::SignalLost(_)) {
        if let Some(w) = waiting.take() {
            record_waiting(user, &w, crate::history::Outcome::Missed);
        }
    }
    outcome?;
    Ok((end, waiting))
}

/// The media options of a direct call with `with`: the call's room and
/// keys, through the relay (and `path` beside it if given), the person's
/// devices, `--record`, `--top` and `controls`; ended by `stop`.
fn direct_options(
    relay: &RelayOptions,
    media: &MediaArgs,
    ready: &CallReady,
    with: &str,
    path: Option<DirectPath>,
    stop: Arc<AtomicBool>,
    controls: &Arc<call::controls::Controls>,
) -> Result<CallOptions> {
    Ok(CallOptions {
        relay: relay.relay.clone(),
        room: ready.room.clone(),
        room_secret: None,
        input: media.input.clone(),
        output: media.output.clone(),
        duration: media.duration,
        alias: media.alias.clone(),
        identity: relay.identity.clone(),
        relay_fingerprint: relay.relay_fingerprint,
        more_relays: Vec::new(),
        known_relays: relay.known_relays.clone(),
        graph: None,
        sets: parse_sets(&media.set)?,
        realtime: !media.no_realtime,
        stop,
        label: String::new(),
        direct: Some(DirectMedia {
            room: ready.room.clone(),
            keys: ready.keys.clone(),
            path,
            with: with.to_string(),
        }),
        stats_json: None,
        record: media.record.clone(),
        top: media.top,
        controls: Some(controls.clone()),
        joined: None,
    })
}

/// How two joined calls ([`run_joined`]) ended.
#[derive(Debug)]
pub enum JoinEnd {
    /// Both are over: hung up here (`q`, Ctrl-C) or the relay went.
    Both(CallEnd),
    /// One party hung up (said, and kept in the history): the other call
    /// goes on on its own; `main` says which one left.
    OneLeft { main: bool },
    /// This end split them again (`s`): the main call goes on, the other
    /// is held (its party told).
    Split,
}

/// Runs two calls joined into one (`c`): `main`'s graph has the microphone
/// and speaker and plays `leg`'s party, whose own graph (no device) takes
/// its input from `main`'s and sends its party's voice back, through two
/// PCM buses (docs/DESIGN.md decision 32). Each party hears the other and
/// this end; both calls' media go through the relays. Ends when this end
/// hangs up (`q`: both), Ctrl-C, the relay goes, or a party hangs up (the
/// other call goes on: [`JoinEnd::OneLeft`]).
pub async fn run_joined(
    sig: &mut SignalConn,
    main: &mut Held,
    leg: &mut Held,
    relay: &RelayOptions,
    media: &MediaArgs,
    user: &UserInput,
) -> Result<JoinEnd> {
    use wzp_stages::audio::bus::PcmBus;
    let (stop, controls) = (&user.stop, &user.controls);
    controls.hold.set(false);
    // The hold beeps play when both parties hold: this end is alone then.
    // One holding leaves the other to talk to, and is said.
    let both_hold = |main: &Held, leg: &Held| main.peer_holds && leg.peer_holds;
    controls.held_tone.set(both_hold(main, leg));
    // The held party is back, told as for a swap.
    if leg.call.hold(false, nonce()?) {
        flush(sig, leg.call.as_mut()).await?;
    }
    // A second of 48 kHz each way.
    let to_leg = ("conf.to_leg".to_string(), PcmBus::new(48_000));
    let from_leg = ("conf.from_leg".to_string(), PcmBus::new(48_000));
    let (main_stop, leg_stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut main_opts = direct_options(
        relay,
        media,
        &main.ready,
        &main.with,
        None,
        main_stop.clone(),
        controls,
    )?;
    // The other call's figures, for this one's `--top`.
    let leg_stats = call::LegStats::default();
    main_opts.joined = Some(call::Joined::Main {
        from: from_leg.clone(),
        to: to_leg.clone(),
        leg_stats: leg_stats.clone(),
    });
    // The other call's graph: no device, no controls, no view of its own.
    let mut leg_opts = direct_options(
        relay,
        media,
        &leg.ready,
        &leg.with,
        None,
        leg_stop.clone(),
        controls,
    )?;
    leg_opts.input = "tone".into();
    leg_opts.output = "null".into();
    leg_opts.label = format!("[{}] ", leg.with);
    leg_opts.record = None;
    // Its figures are shown in the main call's `--top`, below that call's.
    leg_opts.top = false;
    leg_opts.controls = None;
    leg_opts.joined = Some(call::Joined::Leg {
        from: to_leg,
        to: from_leg,
        recording: media.record.is_some(),
        stats_to: leg_stats,
    });
    let spawn = |opts: CallOptions| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("wzp-call".into())
            .spawn(move || {
                let r = call::run_call(opts);
                let _ = tx.send(());
                r
            })
            .map(|t| (t, rx))
            .map_err(|e| anyhow!("starting the call: {e}"))
    };
    let (main_thread, mut main_done) = spawn(main_opts)?;
    let (leg_thread, mut leg_done) = spawn(leg_opts)?;
    println!(
        "joined the calls: {} and {} hear each other and you; s holds the one with {} again, q hangs up both",
        main.with, leg.with, leg.with
    );
    let mut end: Option<JoinEnd> = None;
    loop {
        tokio::select! {
            _ = &mut main_done => break,
            _ = &mut leg_done => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if controls.take_swap() {
                    // The other call's party is held again, told so.
                    if leg.call.hold(true, nonce()?) {
                        flush(sig, leg.call.as_mut()).await?;
                    }
                    println!("holding the call with {} again; the call with {} goes on", leg.with, main.with);
                    end = Some(JoinEnd::Split);
                    break;
                }
                if controls.take_hold() || controls.take_join() {
                    println!("the calls are joined: s holds the one with {} again, q hangs up both", leg.with);
                }
            }
            msg = sig.recv() => match msg {
                Ok(Some(m)) if missed_call(&m, "while in these calls", user.missed_to.as_ref(), user.contacts.as_deref()) => {}
                Ok(Some(m)) if user.missed_to.is_some() && super::listen::voice_messages(&m) => {}
                Ok(Some(m)) => {
                    for (is_main, h) in [(true, &mut *main), (false, &mut *leg)] {
                        match h.call.handle(&m) {
                            Some(CallEvent::HungUp { reason, message }) => {
                                let why = message.unwrap_or_else(|| format!("{reason:?}").to_lowercase());
                                println!("{} hung up ({why})", h.with);
                                h.record(user.missed_to.as_ref());
                                end = Some(JoinEnd::OneLeft { main: is_main });
                            }
                            Some(CallEvent::Hold(on)) => {
                                h.peer_holds = on;
                                let what = if on { "put their call on hold" } else { "took their call back" };
                                println!("{} {what}", h.with);
                            }
                            _ => {}
                        }
                        flush(sig, h.call.as_mut()).await?;
                    }
                    controls.held_tone.set(both_hold(main, leg));
                    if end.is_some() {
                        break;
                    }
                }
                Ok(None) => {
                    end = Some(JoinEnd::Both(CallEnd::SignalLost("the relay ended the signal stream".into())));
                    break;
                }
                Err(e) => {
                    end = Some(JoinEnd::Both(CallEnd::SignalLost(e.to_string())));
                    break;
                }
            }
        }
    }
    // The call that goes on restarts its media: both graphs send silence
    // for a while first (the main graph's hold switch silences what it
    // sends and what it passes to the other), so neither far decoder's
    // comfort noise follows the last word.
    if matches!(end, Some(JoinEnd::OneLeft { .. } | JoinEnd::Split)) {
        controls.hold.set(true);
        tokio::time::sleep(HOLD_DRAIN).await;
    }
    main_stop.store(true, Ordering::Relaxed);
    leg_stop.store(true, Ordering::Relaxed);
    let main_out = main_thread
        .join()
        .map_err(|_| anyhow!("a call's media thread panicked"))?;
    let leg_out = leg_thread
        .join()
        .map_err(|_| anyhow!("a call's media thread panicked"))?;
    controls.hold.set(false);
    controls.held_tone.set(false);
    let end = end.unwrap_or(JoinEnd::Both(CallEnd::Local));
    if let JoinEnd::Both(how) = &end {
        for h in [&mut *main, &mut *leg] {
            if !h.call.is_ended() {
                h.call.hangup();
                if !matches!(how, CallEnd::SignalLost(_)) {
                    flush(sig, h.call.as_mut()).await?;
                }
            }
            h.record(user.missed_to.as_ref());
        }
        match how {
            CallEnd::SignalLost(why) => println!("lost the relay ({why}); both calls ended"),
            _ => println!("hung up both calls"),
        }
    }
    main_out?;
    leg_out?;
    Ok(end)
}

/// The call this device holds reads `m` (what names another call it
/// ignores): one its other party hung up is said, kept in the history and
/// forgotten; a hold from that party is remembered for when it is taken
/// back.
pub async fn held_reads(
    sig: &mut SignalConn,
    held: &mut Option<Held>,
    m: &SignalMessage,
    history: Option<&crate::history::History>,
) -> Result<()> {
    let Some(h) = held.as_mut() else {
        return Ok(());
    };
    match h.call.handle(m) {
        Some(CallEvent::HungUp { reason, message }) => {
            let why = message.unwrap_or_else(|| format!("{reason:?}").to_lowercase());
            println!("the call on hold with {} ended ({why})", h.with);
            h.record(history);
            *held = None;
            return Ok(());
        }
        Some(CallEvent::Hold(on)) => h.peer_holds = on,
        _ => {}
    }
    flush(sig, h.call.as_mut()).await
}

/// Keeps a waiting call that was not taken in the history.
fn record_waiting(user: &UserInput, w: &Waiting, outcome: crate::history::Outcome) {
    if let Some(h) = &user.missed_to {
        h.record(&crate::history::Entry {
            at: crate::history::now(),
            dir: crate::history::Dir::In,
            peer: w.call.caller(),
            alias: w.call.caller_alias().map(str::to_string),
            outcome,
            secs: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ring_level_is_a_peak_in_dbfs_from_minus_60_to_0() {
        for (s, want) in [
            ("-16", -16.0),
            ("-30.5", -30.5),
            ("0", 0.0),
            ("-60dB", -60.0),
        ] {
            assert_eq!(super::parse_ring_level(s), Ok(want), "{s}");
        }
        for bad in ["5", "-61", "loud", ""] {
            let e = super::parse_ring_level(bad).unwrap_err();
            assert!(e.contains("-60..=0"), "{bad}: {e}");
        }
    }
}
