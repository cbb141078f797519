//! In-call controls: the microphone's mute switch and hanging up, from a
//! terminal's keys and from signals.
//!
//! - `m` on the terminal the client runs in mutes or unmutes the
//!   microphone; `q` hangs up the call (`join` and `call` then end, as with
//!   Ctrl-C; `listen` waits for the next call); while a `listen --accept
//!   ask` rings, `a` answers and `d` declines; in a direct call `h` puts the
//!   call on hold and takes it back (both ways silent, the other party told);
//!   with a call waiting, `s` holds the call and answers the waiting one,
//!   and with one call held and one taken, `s` swaps them and `c` joins
//!   them into one (each party hears the other and this end). Keys are read from a terminal
//!   only when the client is interactive ([`interactive`]: standard input
//!   and output are the terminal, and the client is its foreground job); the
//!   terminal is put in non-canonical mode without echo for it (Ctrl-C still
//!   interrupts) and put back as it was when the command ends. `listen
//!   --accept ask` also reads them from a standard input that is no terminal
//!   (a pipe from a program that answers for the user).
//! - `SIGUSR1` mutes, `SIGUSR2` unmutes (for scripts and desktop bindings:
//!   `pkill -USR1 wzp-client`). Each says what it means, so sending one twice
//!   changes nothing.
//! - `--muted` starts muted.
//!
//! The switch is the [`MuteSwitch`] cell `call.mute` that the call graph's
//! `audio.mute` stage reads (`graphs/call.toml`); it is one per process, so a
//! `listen` that answers call after call keeps its position between calls.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use wzp_engine::spec::GraphSpec;
use wzp_stages::audio::mute::MuteSwitch;

/// Quanta of one second (of 50) a muted microphone must hear a voice in
/// for the client to say "you are talking while muted".
pub const TALKING_WHILE_MUTED_FRAMES: u64 = 25;

/// Tells, once per mute, that someone talks into the muted microphone:
/// fed each second with the mute stage's `voiced_muted_frames` and the
/// switch's position.
#[derive(Debug, Default)]
pub struct TalkingWhileMuted {
    last: u64,
    told: bool,
}

impl TalkingWhileMuted {
    /// One second more: the counter now and whether the microphone is
    /// muted. `true` when the person should be told now.
    pub fn second(&mut self, voiced: u64, muted: bool) -> bool {
        let grew = voiced.saturating_sub(self.last);
        self.last = voiced;
        if !muted {
            self.told = false;
            return false;
        }
        if grew >= TALKING_WHILE_MUTED_FRAMES && !self.told {
            self.told = true;
            return true;
        }
        false
    }
}

/// The name of the mute switch's cell, as `graphs/call.toml` names it.
pub const MUTE_CELL: &str = "call.mute";

/// The name of the gate of the beeps a waiting call plays under the call,
/// as `graphs/call.toml` names it.
pub const WAITING_CELL: &str = "call.waiting";

/// The name of the hold switch's cell: `graphs/call.toml`'s `hold_out` and
/// `hold_in` read it (silent both ways while held).
pub const HOLD_CELL: &str = "call.hold";

/// The name of the gate of the beeps a call the other party holds plays,
/// as `graphs/call.toml` names it.
pub const HELD_CELL: &str = "call.held";

/// Whether an `audio.mute` stage of `graphs/call.toml` is one of the hold's
/// (`hold_out`, `hold_in`) rather than the microphone's switch.
pub fn is_hold_stage(id: &str) -> bool {
    id.starts_with("hold_")
}

/// The controls of one client process.
pub struct Controls {
    /// The microphone's mute switch.
    pub mute: Arc<MuteSwitch>,
    /// Open while a second call waits: the call's speaker beeps.
    pub waiting_tone: Arc<wzp_stages::audio::ring_source::RingGate>,
    /// Thrown while this end holds the call: nothing sent, nothing heard.
    pub hold: Arc<MuteSwitch>,
    /// Open while the other party holds the call: the speaker beeps.
    pub held_tone: Arc<wzp_stages::audio::ring_source::RingGate>,
    /// `h` was pressed: put the call on hold, or take it back.
    hold_req: Arc<AtomicBool>,
    /// `s` was pressed: hold this call and answer the waiting one, or swap
    /// to the held one.
    swap_req: Arc<AtomicBool>,
    /// `c` was pressed: join this call with the held one.
    join_req: Arc<AtomicBool>,
    mute_req: Arc<AtomicBool>,
    unmute_req: Arc<AtomicBool>,
    /// `q` was pressed: hang up the call.
    hangup_req: Arc<AtomicBool>,
    /// `a` or `d` was pressed ([`Answer`] as a number; 0: neither).
    answer_req: Arc<AtomicU8>,
    /// The position last announced ([`Controls::changed`]).
    shown: AtomicBool,
    /// Whether the terminal's keys are read.
    keys: bool,
    _terminal: Option<TerminalMode>,
}

impl Controls {
    /// Controls starting `muted`. Installs the `SIGUSR1`/`SIGUSR2` handlers;
    /// reads keys from standard input when the client is [`interactive`]
    /// (in key mode), or when `stdin_keys` (as it comes).
    pub fn new(muted: bool, stdin_keys: bool) -> Result<Controls> {
        let mute = Arc::new(MuteSwitch::new(muted));
        let mute_req = Arc::new(AtomicBool::new(false));
        let unmute_req = Arc::new(AtomicBool::new(false));
        let hangup_req = Arc::new(AtomicBool::new(false));
        let answer_req = Arc::new(AtomicU8::new(0));
        let hold_req = Arc::new(AtomicBool::new(false));
        let swap_req = Arc::new(AtomicBool::new(false));
        let join_req = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, mute_req.clone())
            .context("installing the SIGUSR1 (mute) handler")?;
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, unmute_req.clone())
            .context("installing the SIGUSR2 (unmute) handler")?;
        let terminal = if interactive() {
            TerminalMode::keys()
        } else {
            None
        };
        let keys = terminal.is_some() || (stdin_keys && !std::io::stdin().is_terminal());
        if keys {
            let to = Keys {
                mute: mute.clone(),
                hangup: hangup_req.clone(),
                answer: answer_req.clone(),
                hold: hold_req.clone(),
                swap: swap_req.clone(),
                join: join_req.clone(),
            };
            std::thread::Builder::new()
                .name("wzp-keys".into())
                .spawn(move || read_keys(std::io::stdin(), &to))
                .context("starting the key reader")?;
        }
        Ok(Controls {
            mute,
            waiting_tone: Arc::new(wzp_stages::audio::ring_source::RingGate::new(false)),
            hold: Arc::new(MuteSwitch::new(false)),
            held_tone: Arc::new(wzp_stages::audio::ring_source::RingGate::new(false)),
            hold_req,
            swap_req,
            join_req,
            mute_req,
            unmute_req,
            hangup_req,
            answer_req,
            shown: AtomicBool::new(muted),
            keys,
            _terminal: terminal,
        })
    }

    /// Whether the terminal's keys are read (for the hint printed at the
    /// start of a call).
    pub fn keys(&self) -> bool {
        self.keys
    }

    /// Takes the signals' requests, then the switch's new position if it
    /// moved since the last call (by a key or a signal), to be announced.
    pub fn changed(&self) -> Option<bool> {
        if self.mute_req.swap(false, Ordering::Relaxed) {
            self.mute.set(true);
        }
        if self.unmute_req.swap(false, Ordering::Relaxed) {
            self.mute.set(false);
        }
        let now = self.mute.is_muted();
        (self.shown.swap(now, Ordering::Relaxed) != now).then_some(now)
    }

    /// Whether `h` was pressed since the last call (which forgets it).
    pub fn take_hold(&self) -> bool {
        self.hold_req.swap(false, Ordering::Relaxed)
    }

    /// Whether `s` was pressed since the last call (which forgets it).
    pub fn take_swap(&self) -> bool {
        self.swap_req.swap(false, Ordering::Relaxed)
    }

    /// Whether `c` was pressed since the last call (which forgets it).
    pub fn take_join(&self) -> bool {
        self.join_req.swap(false, Ordering::Relaxed)
    }

    /// Whether `q` was pressed since the last call (which forgets it).
    pub fn take_hangup(&self) -> bool {
        self.hangup_req.swap(false, Ordering::Relaxed)
    }

    /// `a` (answer) or `d` (decline) if one was pressed since the last
    /// call (which forgets it); the later of the two.
    pub fn take_answer(&self) -> Option<Answer> {
        match self.answer_req.swap(0, Ordering::Relaxed) {
            1 => Some(Answer::Accept),
            2 => Some(Answer::Decline),
            _ => None,
        }
    }

    /// Whether the microphone is muted.
    pub fn is_muted(&self) -> bool {
        self.mute.is_muted()
    }
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls")
            .field("muted", &self.is_muted())
            .field("keys", &self.keys)
            .finish()
    }
}

/// What a change of the switch reads as.
pub fn announce(muted: bool) -> &'static str {
    if muted {
        "microphone muted: the others hear silence"
    } else {
        "microphone on"
    }
}

/// Whether `spec` has an `audio.mute` stage thrown by the client's switch
/// (a `--graph` of one's own may not).
pub fn graph_has_switch(spec: &GraphSpec) -> bool {
    spec.stages.iter().any(|s| {
        s.kind == "audio.mute"
            && s.params
                .get("switch")
                .is_some_and(|p| p.value.as_str() == Some(MUTE_CELL))
    })
}

/// The answer to a ringing call, by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Decline,
}

/// Whether a person is at the keyboard: standard input and output are
/// terminals, and this process is the terminal's foreground job. (A test or
/// a script that pipes the output is not; nor is a job in the background,
/// which would be stopped for touching the terminal.)
pub fn interactive() -> bool {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return false;
    }
    // SAFETY: plain queries of the process's own group and of fd 0's
    // foreground group; no memory is passed.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Where the keys go.
struct Keys {
    mute: Arc<MuteSwitch>,
    hangup: Arc<AtomicBool>,
    answer: Arc<AtomicU8>,
    hold: Arc<AtomicBool>,
    swap: Arc<AtomicBool>,
    join: Arc<AtomicBool>,
}

/// Reads keys from `input` (standard input) until it ends.
fn read_keys(mut input: impl Read, to: &Keys) {
    let mut buf = [0u8; 16];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                for &b in &buf[..n] {
                    match b {
                        b'm' | b'M' => {
                            to.mute.toggle();
                        }
                        b'q' | b'Q' => to.hangup.store(true, Ordering::Relaxed),
                        b'a' | b'A' => to.answer.store(1, Ordering::Relaxed),
                        b'd' | b'D' => to.answer.store(2, Ordering::Relaxed),
                        b'h' | b'H' => to.hold.store(true, Ordering::Relaxed),
                        b's' | b'S' => to.swap.store(true, Ordering::Relaxed),
                        b'c' | b'C' => to.join.store(true, Ordering::Relaxed),
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Put in the background (`bg`): reads fail until it is brought
            // back; try again now and then.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
        }
    }
}

/// The terminal in key mode: non-canonical, no echo; put back on drop.
struct TerminalMode {
    saved: libc::termios,
}

impl TerminalMode {
    /// Key mode on standard input, a terminal ([`interactive`] said so);
    /// `None` if its settings cannot be read or set.
    fn keys() -> Option<TerminalMode> {
        // SAFETY: `termios` is plain data; tcgetattr fills it and reports
        // failure by its return value, checked before use.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid, writable termios.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 and a valid termios read from it above. Ignoring
        // SIGTTIN/SIGTTOU makes reads and the restore from a job later put in
        // the background fail (or proceed) rather than stop the process.
        unsafe {
            libc::signal(libc::SIGTTIN, libc::SIG_IGN);
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
        }
        Some(TerminalMode { saved })
    }
}

impl Drop for TerminalMode {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios read from it when key mode began.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talking_while_muted_is_told_once_per_mute() {
        let mut t = TalkingWhileMuted::default();
        // Open: never told, however loud.
        assert!(!t.second(0, false));
        // Muted and quiet (10 voiced quanta of 50), then talking (30).
        assert!(!t.second(10, true));
        assert!(t.second(40, true));
        // Still talking: told once.
        assert!(!t.second(90, true));
        // Unmuted, then muted again and talking: told again.
        assert!(!t.second(90, false));
        assert!(!t.second(90, true));
        assert!(t.second(90 + TALKING_WHILE_MUTED_FRAMES, true));
    }

    #[test]
    fn the_signals_requests_move_the_switch_and_each_move_is_told_once() {
        let c = Controls::new(false, false).unwrap();
        assert_eq!(c.changed(), None);
        c.mute_req.store(true, Ordering::Relaxed);
        assert_eq!(c.changed(), Some(true));
        assert_eq!(c.changed(), None);
        // A second mute is no change.
        c.mute_req.store(true, Ordering::Relaxed);
        assert_eq!(c.changed(), None);
        assert!(c.is_muted());
        c.unmute_req.store(true, Ordering::Relaxed);
        assert_eq!(c.changed(), Some(false));
        // A key's toggle is told the same way.
        c.mute.toggle();
        assert_eq!(c.changed(), Some(true));
    }

    #[test]
    fn the_keys_reach_their_controls_and_other_keys_do_nothing() {
        let c = Controls::new(false, false).unwrap();
        let to = Keys {
            mute: c.mute.clone(),
            hangup: c.hangup_req.clone(),
            answer: c.answer_req.clone(),
            hold: c.hold_req.clone(),
            swap: c.swap_req.clone(),
            join: c.join_req.clone(),
        };
        read_keys(&b"xm \n"[..], &to);
        assert!(c.is_muted());
        assert!(!c.take_hangup());
        assert!(!c.take_hold());
        assert!(!c.take_swap());
        assert_eq!(c.take_answer(), None);
        read_keys(&b"M"[..], &to);
        assert!(!c.is_muted());
        read_keys(&b"mq"[..], &to);
        assert!(c.is_muted());
        assert!(c.take_hangup());
        assert!(!c.take_hangup(), "taken once");
        read_keys(&b"a"[..], &to);
        assert_eq!(c.take_answer(), Some(Answer::Accept));
        assert_eq!(c.take_answer(), None, "taken once");
        // The later key counts.
        read_keys(&b"aD"[..], &to);
        assert_eq!(c.take_answer(), Some(Answer::Decline));
        read_keys(&b"h"[..], &to);
        assert!(c.take_hold());
        assert!(!c.take_hold(), "taken once");
        read_keys(&b"S"[..], &to);
        assert!(c.take_swap());
        assert!(!c.take_swap(), "taken once");
        assert!(!c.take_hold(), "s is not h");
        read_keys(&b"c"[..], &to);
        assert!(c.take_join());
        assert!(!c.take_join(), "taken once");
        assert!(!c.take_swap(), "c is not s");
        assert!(
            !c.hold.is_muted(),
            "the call's loop throws the switch, not the key"
        );
    }
}
