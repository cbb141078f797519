mod common;
use common::client_proc::*;
use common::federation::{global_room, Mesh};
use common::{room_secret, room_sni};

fn dump(mesh: &Mesh) {
    for n in ["a", "b", "c"] {
        let m = mesh.relay(n).http_get("/metrics");
        for l in m.lines().filter(|l| {
            (l.starts_with("wzp_federation") || l.contains("drops_total")) && !l.starts_with('#')
        }) {
            println!("{n}: {l}");
        }
    }
}

fn run(links: &[(&str, &str)]) {
    let sni = room_sni("lobby");
    let mesh = Mesh::start(&["a", "b", "c"], links, &global_room(&sni));
    let mut alice = ClientProc::join(
        mesh.dir.path(),
        mesh.relay("a"),
        "alice",
        "lobby",
        &room_secret("lobby"),
        "builtin",
        &[],
    );
    let mut carol = ClientProc::join(
        mesh.dir.path(),
        mesh.relay("c"),
        "carol",
        "lobby",
        &room_secret("lobby"),
        "tone:660",
        &[],
    );
    alice.wait_room_of("lobby", 2);
    carol.wait_room_of("lobby", 2);
    let heard = talk_then_hang_up(vec![alice, carol], 3);
    for (c, h) in &heard {
        println!(
            "{}: opened {} tone660 {:.1}",
            h.name,
            c.counter("open", "opened"),
            tone_dbfs(&h.talk, 660.0)
        );
    }
    dump(&mesh);
    for n in ["a", "b", "c"] {
        println!("== {n} /peers: {}", mesh.relay(n).http_get("/peers"));
        println!("== {n} log:\n{}", mesh.relay(n).log_text());
    }
}

#[test]
fn chain_b_dials_both() {
    run(&[("b", "a"), ("b", "c")]);
}
#[test]
fn chain_c_dials_b() {
    run(&[("b", "a"), ("c", "b")]);
}
