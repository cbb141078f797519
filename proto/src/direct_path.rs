//! The direct path of a direct call: who is at the other end of a QUIC
//! connection that goes straight from one party to the other, not through
//! the relay.
//!
//! When the callee answers `accept_trusted` the caller learns the callee's
//! address ([`crate::direct_call::CallReady::peer_direct_addr`]) and dials
//! it with the call room's name as the TLS server name. The certificates on
//! that connection prove nothing (each side makes a throwaway one); who is
//! at each end is proven on its first bidirectional stream, opened by the
//! dialer: each side sends one [`PathHello`], its identity key and an
//! Ed25519 signature over [`signed_bytes`]: a label, its role, the call id
//! and the connection's nonce, 32 bytes of the connection's TLS exporter
//! (`wzp_stages::net::quic::direct_nonce`), which both ends compute with no
//! message exchanged and which is unique to that TLS session. So a hello
//! proves the key holder signed for this call, in this role, on this very
//! connection: a relay or anyone on the way that sits between the two
//! (two TLS sessions, two nonces) cannot pass one side's hello on to the
//! other, nor can a hello be replayed on another connection or call, or
//! reflected back to its sender (the role). The acceptor sends its hello
//! only after the dialer's verified, so a stranger that dials it learns
//! nothing. Each side checks the key against the fingerprint the call's
//! handshake already authenticated ([`crate::direct_call::CallReady::peer`]);
//! the media itself stays sealed with the call's keys either way.
//!
//! Wire form (98 bytes): `version (1) | role (1: 0 dialer, 1 acceptor) |
//! identity public key (32) | signature (64)`; docs/WIRE.md §10.
//!
//! ```
//! use wzp_proto::direct_path::{PathProof, Role};
//! use wzp_proto::identity::Seed;
//!
//! let (alice, bob) = (Seed::from_bytes([1; 32]).identity(), Seed::from_bytes([2; 32]).identity());
//! let nonce = [7u8; 32]; // the connection's TLS exporter, the same at both ends
//! let dialer = PathProof::new(&alice, Role::Dialer, bob.fingerprint(), "abc123", &nonce).unwrap();
//! let acceptor = PathProof::new(&bob, Role::Acceptor, alice.fingerprint(), "abc123", &nonce).unwrap();
//! // The dialer sends first; the acceptor answers once it verified.
//! acceptor.verify(&dialer.hello()).unwrap();
//! dialer.verify(&acceptor.hello()).unwrap();
//! // A hello made for another connection (another nonce) fails.
//! let elsewhere = PathProof::new(&alice, Role::Dialer, bob.fingerprint(), "abc123", &[8; 32]).unwrap();
//! assert!(acceptor.verify(&elsewhere.hello()).is_err());
//! ```

use crate::identity::{verify_signature, Identity};
use crate::sni::call_room;
use crate::Fingerprint;

/// Version byte of [`PathHello`].
pub const PATH_HELLO_VERSION: u8 = 1;
/// Length of a [`PathHello`] on the wire.
pub const PATH_HELLO_LEN: usize = 1 + 1 + 32 + 64;
/// Length of the connection nonce a hello signs.
pub const PATH_NONCE_LEN: usize = 32;
/// Domain label of the signed bytes.
pub const PATH_LABEL: &[u8] = b"wzp direct path v1";

/// Which end of the direct connection a side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection (the caller).
    Dialer,
    /// Accepted it (the callee, who shared its address).
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 0,
            Role::Acceptor => 1,
        }
    }

    fn of_byte(b: u8) -> Option<Role> {
        match b {
            0 => Some(Role::Dialer),
            1 => Some(Role::Acceptor),
            _ => None,
        }
    }

    /// The other end's role.
    pub fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// One side's proof: its identity key and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathHello {
    /// The sender's role.
    pub role: Role,
    /// The sender's Ed25519 identity key.
    pub public_key: [u8; 32],
    /// Signature over [`signed_bytes`].
    pub signature: [u8; 64],
}

/// Why a hello was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not a hello of this version.
    #[error("malformed direct path hello: {0}")]
    Malformed(&'static str),
    /// The call id cannot name a call room.
    #[error("not a call id: {0:?}")]
    BadCallId(String),
    /// The hello claims this side's own role (a hello sent back to its sender).
    #[error("the hello claims the {0:?} role, which is ours")]
    WrongRole(Role),
    /// The key is not the call's other party.
    #[error("the direct path answers as {got}, not the call's peer {expected}")]
    WrongPeer {
        /// The fingerprint the call's handshake authenticated.
        expected: Fingerprint,
        /// The fingerprint of the key the hello carries.
        got: Fingerprint,
    },
    /// The signature does not verify for this call and connection.
    #[error("the direct path hello's signature does not verify for this call and connection")]
    BadSignature,
}

impl PathHello {
    /// The hello's 98 bytes.
    pub fn encode(&self) -> [u8; PATH_HELLO_LEN] {
        let mut out = [0u8; PATH_HELLO_LEN];
        out[0] = PATH_HELLO_VERSION;
        out[1] = self.role.byte();
        out[2..34].copy_from_slice(&self.public_key);
        out[34..].copy_from_slice(&self.signature);
        out
    }

    /// Parses exactly one hello; anything else is refused.
    pub fn decode(bytes: &[u8]) -> Result<PathHello, PathError> {
        if bytes.len() != PATH_HELLO_LEN {
            return Err(PathError::Malformed("not 98 bytes"));
        }
        if bytes[0] != PATH_HELLO_VERSION {
            return Err(PathError::Malformed("unknown version"));
        }
        let role = Role::of_byte(bytes[1]).ok_or(PathError::Malformed("unknown role"))?;
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&bytes[2..34]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[34..]);
        Ok(PathHello {
            role,
            public_key,
            signature,
        })
    }
}

/// The bytes a hello signs: [`PATH_LABEL`], `0`, the role byte, the call
/// id's length and bytes, and the connection nonce.
pub fn signed_bytes(role: Role, call_id: &str, nonce: &[u8; PATH_NONCE_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PATH_LABEL.len() + 3 + call_id.len() + PATH_NONCE_LEN);
    m.extend_from_slice(PATH_LABEL);
    m.push(0);
    m.push(role.byte());
    // A call id is at most 58 bytes (`call_room`), so its length fits.
    m.push(call_id.len() as u8);
    m.extend_from_slice(call_id.as_bytes());
    m.extend_from_slice(nonce);
    m
}

/// One side of the exchange on one connection: its own hello, and the
/// check of the other side's.
#[derive(Debug)]
pub struct PathProof {
    role: Role,
    peer: Fingerprint,
    hello: PathHello,
    peer_signed: Vec<u8>,
}

impl PathProof {
    /// `identity` in `role` on a connection whose nonce is `nonce`, for
    /// call `call_id` with `peer` (the fingerprint the call's handshake
    /// authenticated).
    pub fn new(
        identity: &Identity,
        role: Role,
        peer: Fingerprint,
        call_id: &str,
        nonce: &[u8; PATH_NONCE_LEN],
    ) -> Result<PathProof, PathError> {
        if call_room(call_id).is_none() {
            return Err(PathError::BadCallId(call_id.to_string()));
        }
        let hello = PathHello {
            role,
            public_key: identity.public_key(),
            signature: identity.sign(&signed_bytes(role, call_id, nonce)),
        };
        Ok(PathProof {
            role,
            peer,
            hello,
            peer_signed: signed_bytes(role.other(), call_id, nonce),
        })
    }

    /// This side's hello, to send (the acceptor: once the dialer's verified).
    pub fn hello(&self) -> [u8; PATH_HELLO_LEN] {
        self.hello.encode()
    }

    /// Checks the other side's hello: the other role, the call's peer's
    /// key, a signature over this call and connection.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), PathError> {
        let hello = PathHello::decode(bytes)?;
        if hello.role == self.role {
            return Err(PathError::WrongRole(hello.role));
        }
        let got = Fingerprint::of_public_key(&hello.public_key);
        if got != self.peer {
            return Err(PathError::WrongPeer {
                expected: self.peer,
                got,
            });
        }
        verify_signature(&hello.public_key, &self.peer_signed, &hello.signature)
            .map_err(|_| PathError::BadSignature)
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// How long one attempt (dialing and the proof) may take before it fails, ms.
pub const ATTEMPT_MS: u64 = 3_000;
/// The dialer's wait before dialing again after a failed attempt or a lost
/// path, ms; doubles while attempts fail, up to [`RETRY_MAX_MS`].
pub const RETRY_FIRST_MS: u64 = 2_000;
/// The longest wait between the dialer's attempts, ms.
pub const RETRY_MAX_MS: u64 = 30_000;
/// The acceptor's first punches (connection attempts towards the caller's
/// address that open its own NAT for the caller's dial) go this often, ms,
/// while the caller dials for the first time...
pub const PUNCH_FAST_MS: u64 = 200;
/// ... this many of them ([`PUNCH_FAST_MS`] apart: 3 s, an attempt's
/// length)...
pub const PUNCH_FAST: u32 = 15;
/// ... then one this often, ms, while no direct path is up.
pub const PUNCH_EVERY_MS: u64 = 1_000;

/// The birthday search, for one party behind a NAT that maps every
/// destination to a new port on a random pick (symmetric, as carrier-grade
/// NATs often are: the *searching* side) and the other behind one that
/// keeps a socket's port for every destination but lets in only replies (a
/// home router, `iptables MASQUERADE`: the *spraying* side). A dial from
/// the searching side leaves from a port no one can know, which the
/// spraying side's NAT does not let in; so the searching side opens
/// [`BIRTHDAY_SOCKETS`] sockets, each sending a [`PROBE`] to the spraying
/// side's address (each a mapping on its own random port), while the
/// spraying side sends probes from its signalling socket to
/// [`SPRAY_PORTS`] random ports of the searching side's public address a
/// round (each opening its NAT for replies from there). When a round's
/// port meets one of the mappings the probe comes through on that socket,
/// and the searching side dials from it: its NAT already maps it to the
/// spraying side, whose NAT lets it in. With 256 sockets and 1024 ports of
/// 64 512 a round meets one 98 % of the time ([`spray_round_meets`]).
/// Either side may be either: a searching callee dials its caller, who
/// takes the connection as the acceptor.
///
/// Which half a side takes ([`PathSchedule::with_birthday`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BirthdayHalf {
    /// Open the sockets and dial from the one a probe comes through on
    /// (behind a NAT that maps every destination anew).
    Search,
    /// Send the rounds of probes, and take a dial from any port of the
    /// peer's address (behind a NAT that keeps the port, or none).
    Spray,
}

/// Sockets the searching side opens.
pub const BIRTHDAY_SOCKETS: usize = 256;
/// How often each of them sends its probe, ms (the first at once).
pub const BIRTHDAY_PROBE_EVERY_MS: u64 = 500;
/// How long the searching side waits for a probe to come through, ms: the
/// rounds ([`SPRAY_ROUNDS`], [`SPRAY_EVERY_MS`] apart) begin when the
/// dialer's first attempt fails or the acceptor's first fast punches end
/// (both about [`BIRTHDAY_AFTER_MS`] after the call starts), as the search
/// does.
pub const BIRTHDAY_WAIT_MS: u64 = 8_000;
/// With a half to take (the two sides' halves differ: one NAT moved its
/// port, the other kept it), how long the plain attempt has before the
/// half begins, ms: the dialer's first attempt gives up then
/// ([`PathSchedule::attempt_ms`]; between two NATs that meet by plain
/// punching the path is up in tens of ms, between such a pair it never
/// comes), and the acceptor's half begins after this long of fast punches
/// (which go on). Not [`ATTEMPT_MS`]: the media would wait on the relay
/// two seconds more for nothing.
pub const BIRTHDAY_AFTER_MS: u64 = 1_000;
/// The acceptor's fast punches before its half begins
/// ([`BIRTHDAY_AFTER_MS`] of them).
const BIRTHDAY_AFTER_PUNCHES: u32 = (BIRTHDAY_AFTER_MS / PUNCH_FAST_MS) as u32;
/// Ports of the searching side's address a spray round sends to.
pub const SPRAY_PORTS: u32 = 1024;
/// Probes sent at once within a round...
pub const SPRAY_BATCH: u32 = 64;
/// ... this often, ms (a round in 400 ms: 2 500 probes a second of 37
/// bytes on the wire, about 0.7 Mb/s while it lasts).
pub const SPRAY_BATCH_EVERY_MS: u64 = 25;
/// Rounds once the path did not come up by itself...
pub const SPRAY_ROUNDS: u32 = 6;
/// ... this far apart, ms.
pub const SPRAY_EVERY_MS: u64 = 1_000;
/// The lowest port a NAT maps to (Linux's and most NATs' pick for a source
/// port of 1024 or more is 1024-65535).
pub const SPRAY_LOW_PORT: u16 = 1024;
/// What a probe carries: nothing a QUIC endpoint takes for a packet (the
/// first byte's fixed bit is clear, so quinn drops it unanswered), too
/// short to be answered with a stateless reset.
pub const PROBE: &[u8] = b"\0wzp-bday";

/// The chance that one spray round meets one of the searching side's
/// [`BIRTHDAY_SOCKETS`] mappings, each on a port NAT picked at random in
/// `SPRAY_LOW_PORT..=65535`.
pub fn spray_round_meets() -> f64 {
    let range = f64::from(u32::from(u16::MAX) - u32::from(SPRAY_LOW_PORT) + 1);
    let miss = 1.0 - BIRTHDAY_SOCKETS as f64 / range;
    1.0 - miss.powf(f64::from(SPRAY_PORTS))
}

/// The ports a spray round sends to: uniform in
/// `SPRAY_LOW_PORT..=65535`, a different sequence for every seed
/// (splitmix64), the same for the same seed.
#[derive(Clone, Debug)]
pub struct SprayPorts {
    state: u64,
}

impl SprayPorts {
    /// The ports for `seed` (the shell draws it from the OS's randomness).
    pub fn new(seed: u64) -> SprayPorts {
        SprayPorts { state: seed }
    }
}

impl Iterator for SprayPorts {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = u64::from(u16::MAX) - u64::from(SPRAY_LOW_PORT) + 1;
        // Below 2^16 by construction.
        Some(SPRAY_LOW_PORT + (z % span) as u16)
    }
}

/// What a side of a direct path does now ([`PathSchedule::poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathAction {
    /// Dial the peer (the dialer); report the outcome with
    /// [`PathSchedule::up`] or [`PathSchedule::failed`].
    Dial,
    /// Send a punch towards the peer (the acceptor).
    Punch,
    /// Run a birthday search ([`BirthdayHalf::Search`]:
    /// [`BIRTHDAY_SOCKETS`] sockets probing the peer, dialing from the one
    /// a probe comes through on). The dialer reports the outcome as for
    /// [`PathAction::Dial`]; the acceptor reports [`PathSchedule::up`]
    /// when it came up and nothing when not (its punches go on).
    Birthday,
    /// Send a round of probes ([`BirthdayHalf::Spray`]: [`SPRAY_PORTS`]
    /// random ports of the peer's address, [`SprayPorts`]).
    Spray,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting to act at `at` (ms).
    Waiting { at: u64 },
    /// An attempt is under way (the dialer).
    Attempting,
    /// The direct path carries the media.
    Up,
    /// Nothing to do (a dialer with no address, an acceptor with nothing
    /// to punch towards).
    Idle,
}

/// When each side of a direct path acts, stepped with `now` (ms): the
/// dialer dials at once, again [`RETRY_FIRST_MS`] after a failure or a
/// lost path, the wait doubling to [`RETRY_MAX_MS`] while attempts fail;
/// the acceptor, when the caller shared its address, punches while no
/// direct path is up ([`PUNCH_FAST`] every [`PUNCH_FAST_MS`], then every
/// [`PUNCH_EVERY_MS`]; fast again after a loss). Sans-IO: the shell
/// (`client-graph/src/nat`) dials, punches and sleeps until
/// [`PathSchedule::next_at`].
#[derive(Clone, Debug)]
pub struct PathSchedule {
    role: Role,
    phase: Phase,
    /// The dialer's next wait after a failure.
    wait_ms: u64,
    /// Failed attempts in a row (the dialer).
    failures: u32,
    /// Punches since the last start or loss (the acceptor).
    punches: u32,
    /// This side's half of birthday searches, if any
    /// ([`PathSchedule::with_birthday`]).
    birthday: Option<BirthdayHalf>,
    /// The half is owed once the path did not come up by itself (one per
    /// start or loss).
    birthday_owed: bool,
    /// Spray rounds since the half began, and when the next one is due.
    sprays: u32,
    spray_at: Option<u64>,
    /// When the search is due (the dialer's is an attempt: its outcome is
    /// reported as a dial's).
    search_at: Option<u64>,
}

impl PathSchedule {
    /// A side in `role` that knows the peer's address or not (the dialer
    /// needs it to dial, the acceptor to punch), starting at `now_ms`.
    pub fn new(role: Role, peer_addr_known: bool, now_ms: u64) -> PathSchedule {
        PathSchedule {
            role,
            phase: if peer_addr_known {
                Phase::Waiting { at: now_ms }
            } else {
                Phase::Idle
            },
            wait_ms: RETRY_FIRST_MS,
            failures: 0,
            punches: 0,
            birthday: None,
            birthday_owed: false,
            sprays: 0,
            spray_at: None,
            search_at: None,
        }
    }

    /// With this `half` of birthday searches (the peer's address is IPv4,
    /// where NATs stand, and the peer takes the other half), once per start
    /// or loss, when the dialer's first attempt fails (it has
    /// [`BIRTHDAY_AFTER_MS`], [`Self::attempt_ms`]) or the acceptor's first
    /// [`BIRTHDAY_AFTER_MS`] of fast punches end without a path:
    /// [`BirthdayHalf::Search`] runs one search ([`PathAction::Birthday`]:
    /// the dialer at once, instead of its wait; the acceptor when its next
    /// fast punch would have gone, beside its punches);
    /// [`BirthdayHalf::Spray`] sends [`SPRAY_ROUNDS`] rounds
    /// ([`PathAction::Spray`], [`SPRAY_EVERY_MS`] apart, from then; the
    /// dialer's next dial waits until the last round is a wait old).
    pub fn with_birthday(mut self, half: Option<BirthdayHalf>) -> PathSchedule {
        self.birthday = half;
        self.birthday_owed = half.is_some();
        self
    }

    /// What to do at `now_ms`, if anything.
    pub fn poll(&mut self, now_ms: u64) -> Option<PathAction> {
        let Phase::Waiting { at } = self.phase else {
            return None;
        };
        if let Some(spray) = self.spray_at.filter(|t| now_ms >= *t) {
            self.sprays = self.sprays.saturating_add(1);
            self.spray_at = (self.sprays < SPRAY_ROUNDS).then_some(spray + SPRAY_EVERY_MS);
            return Some(PathAction::Spray);
        }
        if self.search_at.is_some_and(|t| now_ms >= t) {
            self.search_at = None;
            if self.role == Role::Dialer {
                self.phase = Phase::Attempting;
            }
            return Some(PathAction::Birthday);
        }
        if now_ms < at {
            return None;
        }
        match self.role {
            Role::Dialer => {
                self.phase = Phase::Attempting;
                Some(PathAction::Dial)
            }
            Role::Acceptor => {
                self.punches = self.punches.saturating_add(1);
                let every = if self.punches < PUNCH_FAST {
                    PUNCH_FAST_MS
                } else {
                    PUNCH_EVERY_MS
                };
                if self.punches == BIRTHDAY_AFTER_PUNCHES && std::mem::take(&mut self.birthday_owed)
                {
                    // The plain attempt had its time: the half starts
                    // when the next fast punch goes.
                    let start = Some(now_ms + PUNCH_FAST_MS);
                    match self.birthday {
                        Some(BirthdayHalf::Spray) => self.spray_at = start,
                        Some(BirthdayHalf::Search) => self.search_at = start,
                        None => {}
                    }
                }
                self.phase = Phase::Waiting { at: now_ms + every };
                Some(PathAction::Punch)
            }
        }
    }

    /// How long the dialer's attempt that [`Self::poll`] just asked for may
    /// take to connect, ms: [`ATTEMPT_MS`], or [`BIRTHDAY_AFTER_MS`] for
    /// the first after a start or loss when a birthday half follows it.
    pub fn attempt_ms(&self) -> u64 {
        if self.role == Role::Dialer && self.birthday_owed {
            BIRTHDAY_AFTER_MS
        } else {
            ATTEMPT_MS
        }
    }

    /// When [`Self::poll`] has something to do next (`None`: not until an
    /// attempt's outcome or a change of the path).
    pub fn next_at(&self) -> Option<u64> {
        match self.phase {
            Phase::Waiting { at } => Some(
                [self.spray_at, self.search_at]
                    .into_iter()
                    .flatten()
                    .fold(at, u64::min),
            ),
            _ => None,
        }
    }

    /// The attempt failed at `now_ms`; returns how many failed in a row
    /// (the shell reports the first). The first after a start or a loss
    /// begins this side's half of a birthday search, if it has one.
    pub fn failed(&mut self, now_ms: u64) -> u32 {
        self.failures = self.failures.saturating_add(1);
        let mut wait_from = now_ms;
        if std::mem::take(&mut self.birthday_owed) {
            match self.birthday {
                Some(BirthdayHalf::Search) => {
                    // The search comes first; a dial only if it fails too.
                    self.search_at = Some(now_ms);
                    self.phase = Phase::Waiting { at: now_ms };
                    return self.failures;
                }
                Some(BirthdayHalf::Spray) => {
                    self.sprays = 0;
                    self.spray_at = Some(now_ms);
                    wait_from = now_ms + u64::from(SPRAY_ROUNDS - 1) * SPRAY_EVERY_MS;
                }
                None => {}
            }
        }
        self.phase = Phase::Waiting {
            at: wait_from + self.wait_ms,
        };
        self.wait_ms = (self.wait_ms * 2).min(RETRY_MAX_MS);
        self.failures
    }

    /// The direct path is up (the dialer's attempt succeeded, or the
    /// acceptor proved a dialer): no dialing or punching while it lasts.
    pub fn up(&mut self) {
        self.phase = Phase::Up;
        self.failures = 0;
        self.wait_ms = RETRY_FIRST_MS;
        self.spray_at = None;
        self.search_at = None;
    }

    /// The direct path was lost at `now_ms`: the dialer dials again after
    /// [`RETRY_FIRST_MS`], the acceptor punches again at once (if it has
    /// an address to punch towards).
    pub fn lost(&mut self, now_ms: u64, peer_addr_known: bool) {
        self.birthday_owed = self.birthday.is_some();
        self.sprays = 0;
        self.spray_at = None;
        self.search_at = None;
        if !peer_addr_known {
            self.phase = Phase::Idle;
            return;
        }
        self.phase = match self.role {
            Role::Dialer => Phase::Waiting {
                at: now_ms + RETRY_FIRST_MS,
            },
            Role::Acceptor => {
                self.punches = 0;
                Phase::Waiting { at: now_ms }
            }
        };
    }

    /// Follows the path as the shell sees it at `now_ms` (`up`: media on a
    /// direct connection, whichever side's loop carries it): [`Self::up`]
    /// when it came up, [`Self::lost`] when it went down; nothing when the
    /// schedule already agrees.
    pub fn track(&mut self, up: bool, now_ms: u64) {
        match (up, self.is_up()) {
            (true, false) => self.up(),
            (false, true) => self.lost(now_ms, true),
            _ => {}
        }
    }

    /// Whether the direct path is up as far as this schedule knows.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Seed;

    fn id(n: u8) -> Identity {
        Seed::from_bytes([n; 32]).identity()
    }

    #[test]
    fn both_sides_verify_each_other() {
        let (a, b) = (id(1), id(2));
        let nonce = [9u8; 32];
        let d = PathProof::new(&a, Role::Dialer, b.fingerprint(), "c1", &nonce).unwrap();
        let x = PathProof::new(&b, Role::Acceptor, a.fingerprint(), "c1", &nonce).unwrap();
        assert_eq!(x.verify(&d.hello()), Ok(()));
        assert_eq!(d.verify(&x.hello()), Ok(()));
        assert_eq!(PathHello::decode(&d.hello()).unwrap().role, Role::Dialer);
    }

    #[test]
    fn a_bad_call_id_is_refused() {
        let (a, b) = (id(1), id(2));
        for bad in ["", "UPPER", "has space", &"x".repeat(59)] {
            assert!(matches!(
                PathProof::new(&a, Role::Dialer, b.fingerprint(), bad, &[0; 32]),
                Err(PathError::BadCallId(_))
            ));
        }
    }
}
