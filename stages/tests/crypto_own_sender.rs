//! `crypto.open` drops packets carrying the local sender id: an echo of
//! one's own voice (a relay's, or an attacker's who captured it) never
//! plays. The id reaches the receive path from `wire.packetize` through a
//! `LocalSender` cell, random ids included, or from a param.

mod wire_support;

use std::sync::Arc;

use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::MediaHeader;
use wzp_stages::wire::LocalSender;

wzp_engine::install_alloc_checker!();

fn room_key() -> Vec<(&'static str, ParamValue)> {
    vec![
        ("room", s("echo-room")),
        ("room_secret", s("0123456789abcdef0123")),
    ]
}

/// A sender's pack + seal, its id published in `cell` when given.
struct Sender {
    pack: Stage,
    seal: Stage,
    seq: u32,
}

impl Sender {
    fn new(id: i64, cell: Option<&str>, res: &Resources) -> Sender {
        let mut params = vec![("sender_id", i(id))];
        if let Some(c) = cell {
            params.push(("publish_sender", s(c)));
        }
        Sender {
            pack: build_with("wire.packetize", &params, res),
            seal: build_with("crypto.seal", &room_key(), res),
            seq: 0,
        }
    }
    fn next(&mut self) -> Vec<u8> {
        self.seq += 1;
        let plain = self.pack.run_frames(&[frame(self.seq, 40)]);
        let mut sealed = self.seal.run_packets(&plain);
        assert_eq!(sealed.len(), 1);
        sealed.remove(0)
    }
}

fn sender_of(p: &[u8]) -> u32 {
    MediaHeader::parse(p).unwrap().0.sender_id
}

#[test]
fn a_random_id_reaches_the_receive_path_and_its_echo_is_dropped() {
    let cell = Arc::new(LocalSender::new());
    let mut res = Resources::new();
    res.insert("call.local_sender", cell.clone());
    // The receive path is built first: the cell is read every cycle, so the
    // build order does not matter.
    let mut open = build_with(
        "crypto.open",
        &[room_key(), vec![("local_sender", s("call.local_sender"))]].concat(),
        &res,
    );
    assert_eq!(cell.get(), None);
    let mut me = Sender::new(-1, Some("call.local_sender"), &res);
    let mine = cell.get().expect("packetize published its random id");
    let mut other = Sender::new(-1, None, &Resources::new());

    let (m1, o1) = (me.next(), other.next());
    assert_eq!(sender_of(&m1), mine);
    assert_ne!(sender_of(&o1), mine);
    // The relay (or anyone) sends my own packet back, fresh index and all.
    let out = open.run_packets(&[m1.clone(), o1.clone(), me.next()]);
    assert_eq!(out.len(), 1, "only the other member's packet opens");
    assert_eq!(sender_of(&out[0]), sender_of(&o1));
    assert_eq!(open.counter("own_sender"), 2);
    assert_eq!(open.counter("opened"), 1);
    assert_eq!(open.gauge("senders"), 1, "an echo takes no sender entry");
    assert_eq!(open.counter("bad_tag"), 0);

    // The drop itself is real-time safe.
    let echo = me.next();
    open.packets_in().clear();
    open.packets_in()
        .push(PacketMeta::default(), &echo)
        .unwrap();
    wzp_engine::rt_check::assert_rt_safe("crypto.open own-id drop", 1, || open.step());
    assert_eq!(open.counter("own_sender"), 3);
    assert_eq!(open.packets_out().len(), 0);

    // The send path is rebuilt (a new random id): the receive path follows.
    let mut me2 = Sender::new(-1, Some("call.local_sender"), &res);
    let mine2 = cell.get().unwrap();
    assert_ne!(mine2, mine);
    let out = open.run_packets(&[me2.next(), m1]);
    assert_eq!(out.len(), 1, "the old id is someone else's now");
    assert_eq!(open.counter("own_sender"), 4);
}

#[test]
fn a_fixed_id_param_drops_the_echo_too() {
    let mut open = build(
        "crypto.open",
        &[room_key(), vec![("local_sender_id", i(4242))]].concat(),
    );
    let mut me = Sender::new(4242, None, &Resources::new());
    let mut other = Sender::new(77, None, &Resources::new());
    let out = open.run_packets(&[me.next(), other.next(), me.next()]);
    assert_eq!(
        out.iter().map(|p| sender_of(p)).collect::<Vec<_>>(),
        vec![77]
    );
    assert_eq!(open.counter("own_sender"), 2);
    // Without the param (the default) nothing is dropped.
    let mut open = build("crypto.open", &room_key());
    let mut me = Sender::new(4242, None, &Resources::new());
    assert_eq!(open.run_packets(&[me.next()]).len(), 1);
    assert_eq!(open.counter("own_sender"), 0);
}

#[test]
fn missing_cells_and_unpublishable_ids_are_refused_at_build() {
    let res = Resources::new();
    match try_build(
        "crypto.open",
        &[room_key(), vec![("local_sender", s("nope"))]].concat(),
        &res,
    ) {
        Err(BuildError::Param(e)) => {
            assert_eq!(e.param, "local_sender");
            assert!(e.message.contains("nope"), "{}", e.message);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("built without the cell"),
    }
    match try_build("wire.packetize", &[("publish_sender", s("nope"))], &res) {
        Err(BuildError::Param(e)) => assert_eq!(e.param, "publish_sender"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("built without the cell"),
    }
    let mut res = Resources::new();
    res.insert("c", Arc::new(LocalSender::new()));
    match try_build(
        "wire.packetize",
        &[("publish_sender", s("c")), ("sender_id", i(0))],
        &res,
    ) {
        Err(BuildError::Param(e)) => {
            assert_eq!(e.param, "publish_sender");
            assert!(e.message.contains("sender_id"), "{}", e.message);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("published a per-frame id"),
    }
}
