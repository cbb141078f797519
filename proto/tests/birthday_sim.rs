//! Two parties' direct-path schedules stepped together against simulated
//! NATs: one side behind a NAT that maps every destination to a random port
//! (it searches), the other behind one that keeps its port and lets in only
//! replies (it sprays). Plain attempts never get through, as between such
//! NATs; the test checks that the two halves of the birthday search meet
//! in time, whichever side calls, over many calls with their own random
//! ports: the windows line up (the search's sockets exist while rounds are
//! sent) and the rounds meet a mapping as often as `spray_round_meets`
//! says.

use std::collections::HashSet;

use wzp_proto::direct_path::{
    BirthdayHalf, PathAction, PathSchedule, Role, SprayPorts, BIRTHDAY_AFTER_MS, BIRTHDAY_SOCKETS,
    BIRTHDAY_WAIT_MS, SPRAY_BATCH, SPRAY_BATCH_EVERY_MS, SPRAY_PORTS,
};

/// One side: its schedule, and the shell's state the schedule drives.
struct Side {
    schedule: PathSchedule,
    /// The dialer's plain attempt under way: when it fails.
    dialing_until: Option<u64>,
    /// The search's window and its sockets' public ports (the NAT's picks).
    search: Option<(u64, u64, HashSet<u16>)>,
    /// Spray packets sent: (when, port).
    sprays: Vec<(u64, u16)>,
}

impl Side {
    fn new(role: Role, half: BirthdayHalf) -> Side {
        Side {
            schedule: PathSchedule::new(role, true, 0).with_birthday(Some(half)),
            dialing_until: None,
            search: None,
            sprays: Vec::new(),
        }
    }

    /// Steps the schedule at `now`, as the shell would: a dial fails after
    /// its attempt, a search opens its sockets, a round sends its probes.
    fn step(&mut self, now: u64, nat: &mut SprayPorts, spray: &mut SprayPorts) {
        if self.dialing_until.is_some_and(|t| now >= t) {
            self.dialing_until = None;
            self.schedule.failed(now);
        }
        while let Some(action) = self.schedule.poll(now) {
            match action {
                PathAction::Dial => {
                    self.dialing_until = Some(now + self.schedule.attempt_ms());
                }
                PathAction::Punch => {}
                PathAction::Birthday => {
                    let ports = nat.by_ref().take(BIRTHDAY_SOCKETS).collect();
                    self.search = Some((now, now + BIRTHDAY_WAIT_MS, ports));
                }
                PathAction::Spray => {
                    let batches = SPRAY_PORTS / SPRAY_BATCH;
                    for b in 0..u64::from(batches) {
                        let at = now + b * SPRAY_BATCH_EVERY_MS;
                        for port in spray.by_ref().take(SPRAY_BATCH as usize) {
                            self.sprays.push((at, port));
                        }
                    }
                }
            }
        }
    }
}

/// A call with `searcher_role` behind the symmetric NAT: when its path is
/// up (ms after the call's start), if within 20 s.
fn one_call(seed: u64, searcher_role: Role) -> Option<u64> {
    let mut searcher = Side::new(searcher_role, BirthdayHalf::Search);
    let mut sprayer = Side::new(searcher_role.other(), BirthdayHalf::Spray);
    let mut nat = SprayPorts::new(seed.wrapping_mul(2).wrapping_add(1));
    let mut spray = SprayPorts::new(seed.wrapping_mul(2));
    let mut unused = SprayPorts::new(0);
    for now in (0..20_000).step_by(5) {
        searcher.step(now, &mut nat, &mut unused);
        sprayer.step(now, &mut unused, &mut spray);
        // A probe sent by now to one of the search's ports while its
        // sockets are open comes through: the searcher dials from there.
        if let Some((from, to, ports)) = &searcher.search {
            let hit = sprayer
                .sprays
                .iter()
                .filter(|(at, _)| *at >= *from && *at <= *to && *at <= now)
                .any(|(_, port)| ports.contains(port));
            if hit {
                return Some(now);
            }
            if now > *to {
                searcher.search = None;
            }
        }
    }
    None
}

#[test]
fn the_halves_meet_within_a_few_seconds_whoever_calls() {
    for role in [Role::Dialer, Role::Acceptor] {
        let mut ups = Vec::new();
        let mut missed = 0;
        for seed in 0..400u64 {
            match one_call(seed, role) {
                Some(t) => ups.push(t),
                None => missed += 1,
            }
        }
        // Six rounds while the sockets are open: a miss is about one call
        // in 10^10; none in 400.
        assert_eq!(missed, 0, "{role:?}");
        ups.sort_unstable();
        let median = ups[ups.len() / 2];
        let worst = *ups.last().unwrap();
        // Both halves start when the plain attempt gives up (1 s); the
        // first round (0.4 s) meets a socket 98 % of the time.
        let start = BIRTHDAY_AFTER_MS;
        assert!(
            (start..=start + 500).contains(&median),
            "{role:?}: median {median} ms"
        );
        assert!(worst <= start + 3_000, "{role:?}: worst {worst} ms");
    }
}

#[test]
fn a_search_with_no_one_spraying_never_meets() {
    // Both sides behind symmetric NATs: both search, no probes come.
    let mut a = Side::new(Role::Dialer, BirthdayHalf::Search);
    let mut b = Side::new(Role::Acceptor, BirthdayHalf::Search);
    let (mut nat, mut unused) = (SprayPorts::new(1), SprayPorts::new(2));
    for now in (0..20_000).step_by(5) {
        a.step(now, &mut nat, &mut unused);
        b.step(now, &mut nat, &mut unused);
    }
    assert!(a.sprays.is_empty() && b.sprays.is_empty());
}
