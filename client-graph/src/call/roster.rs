//! Who is in the room, as the relay's last room update listed them: their
//! names, who said they muted, and which media sender ids the relay bound to
//! whom, so the client can name the voice each receive chain plays.
//!
//! The connection task writes it on each update; `--top` reads it once a
//! second (never the real-time threads).

use std::sync::{Arc, Mutex};

use wzp_proto::signal::RoomParticipant;
use wzp_proto::Fingerprint;

/// The room's members as last listed, and who this client is among them.
#[derive(Clone, Debug)]
pub struct Roster {
    /// This client's fingerprint.
    pub me: Fingerprint,
    /// Members in the relay's order (join order, local then remote).
    pub participants: Vec<RoomParticipant>,
    /// Members in the room (may exceed the list if the relay truncated it).
    pub count: u32,
}

/// The roster shared between the connection task and the view; `None`
/// before the first admission.
pub type SharedRoster = Arc<Mutex<Option<Roster>>>;

impl Roster {
    /// The member who sends with media sender id `sender`, if the relay
    /// bound it to one.
    pub fn by_sender(&self, sender: u32) -> Option<&RoomParticipant> {
        self.participants
            .iter()
            .find(|p| p.senders.contains(&sender))
    }
}

/// How a member is shown: its alias, else the start of its fingerprint.
pub fn display_name(p: &RoomParticipant) -> String {
    match &p.alias {
        Some(a) if !a.is_empty() => a.clone(),
        _ => {
            let fp = p.fingerprint.to_string();
            format!("{}…", fp.get(..9).unwrap_or(&fp))
        }
    }
}

/// The line a room update prints: `room NAME: COUNT (ann, bob (muted),
/// cy (recording))`.
pub fn update_line(room: &str, count: u32, participants: &[RoomParticipant]) -> String {
    let names: Vec<String> = participants
        .iter()
        .map(|p| {
            let name = p.alias.clone().unwrap_or_else(|| p.fingerprint.to_string());
            let marks: Vec<&str> = [(p.muted, "muted"), (p.recording, "recording")]
                .into_iter()
                .filter_map(|(on, mark)| on.then_some(mark))
                .collect();
            if marks.is_empty() {
                name
            } else {
                format!("{name} ({})", marks.join(", "))
            }
        })
        .collect();
    format!("room {room}: {count} ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, alias: Option<&str>, muted: bool, senders: &[u32]) -> RoomParticipant {
        RoomParticipant {
            alias: alias.map(String::from),
            muted,
            senders: senders.to_vec(),
            ..RoomParticipant::new(Fingerprint([n; 16]))
        }
    }

    #[test]
    fn an_update_line_names_everyone_and_marks_the_muted() {
        let ps = [
            member(1, Some("ann"), false, &[]),
            member(2, Some("bob"), true, &[7]),
            member(3, None, false, &[]),
        ];
        assert_eq!(
            update_line("standup", 3, &ps),
            format!(
                "room standup: 3 (ann, bob (muted), {})",
                Fingerprint([3; 16])
            )
        );
    }

    #[test]
    fn an_update_line_marks_who_records_the_call() {
        let mut bob = member(2, Some("bob"), true, &[7]);
        bob.recording = true;
        let mut cy = member(3, Some("cy"), false, &[]);
        cy.recording = true;
        assert_eq!(
            update_line("standup", 3, &[member(1, Some("ann"), false, &[]), bob, cy]),
            "room standup: 3 (ann, bob (muted, recording), cy (recording))"
        );
    }

    #[test]
    fn a_voice_is_named_by_the_sender_id_the_relay_bound() {
        let r = Roster {
            me: Fingerprint([1; 16]),
            participants: vec![
                member(1, Some("ann"), false, &[5]),
                member(2, Some("bob"), false, &[7, 9]),
            ],
            count: 2,
        };
        assert_eq!(r.by_sender(9).map(display_name).as_deref(), Some("bob"));
        assert_eq!(r.by_sender(5).map(display_name).as_deref(), Some("ann"));
        assert!(r.by_sender(6).is_none());
        let anon = member(0xab, None, false, &[]);
        assert_eq!(display_name(&anon), "abab:abab…");
    }
}
