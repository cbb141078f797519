//! Reloading the config file with no restart (`wzp-relay` on `SIGHUP`).
//!
//! Who the relay federates with, which rooms it bridges and who may join its
//! fixed call rooms change at once, with every other call and link left
//! alone:
//!
//! - `[[peers]]` and `[[trusted]]`: a relay new to them is dialed at once
//!   (a peer) or accepted when it dials in (trusted); one taken out has its
//!   link closed, what it announced withdrawn and the calls through it ended,
//!   and is refused from then on; one whose label or address changed keeps
//!   its link ([`crate::federation::FederationCore::set_peers`]).
//! - `[[calls]]`: a new call room admits its fingerprints; a call room taken
//!   out is closed (its members' connections end); one whose fingerprints
//!   changed closes only the members no longer listed.
//!
//! - `[[global_rooms]]`: a room added is bridged at once (members already in
//!   it are announced to the peers that bridge it too); one taken out stops
//!   being bridged (its remote members leave its members' lists). Peers at
//!   federation version 4 or later hear the new list on their link; older
//!   ones when their link next comes up.
//!
//! - Settings read when something happens: `call_room_size` and
//!   `max_room_size` for the joins from then on (members already over a
//!   lowered size stay); `join_timeout_ms` and `join_max_skew_s` for the
//!   joins from then on; `ringing_timeout_s` for the calls offered from then
//!   on (calls ringing keep their deadline); `debug_tap`, at once for every
//!   open room, both ways.
//! - `event_log`: the file is opened anew at every reload, so a log
//!   rotation that moved it away (`logrotate`'s `postrotate`: `kill -HUP`)
//!   gets a new file; a changed path takes effect, an unset one stops the
//!   log. A path that cannot be opened leaves the log on the file it had.
//!
//! Everything else (addresses, capacities, threads, the graph, the label,
//! voice message storage) is bound into running tasks, sockets and
//! preallocated tables: a change there is named in the result as waiting
//! for a restart, and the running value stays.
//! A file that does not read or validate changes nothing.

use std::sync::Mutex;

use wzp_proto::close::CloseCode;

use wzp_proto::federation::RoomId;

use crate::config::{global_room_sni, CallEntry, Config};
use crate::endpoint::Services;
use crate::federation::PeerChanges;

/// The parts of the config a reload applies, as last applied.
#[derive(Debug)]
pub struct Applied {
    /// The settings a reload applies, as last applied (compared by
    /// [`LIVE`] key).
    cfg: Config,
    calls: Vec<CallEntry>,
    /// The global rooms' names in the file, by room id.
    global: Vec<(RoomId, String)>,
}

impl Applied {
    /// What the relay started with.
    pub fn new(cfg: &Config) -> Mutex<Applied> {
        Mutex::new(Applied {
            cfg: cfg.clone(),
            calls: cfg.calls.clone(),
            global: global_rooms(cfg),
        })
    }
}

/// `cfg`'s global rooms: each one's id and its name in the file.
fn global_rooms(cfg: &Config) -> Vec<(RoomId, String)> {
    cfg.global_rooms
        .iter()
        .filter_map(|g| {
            Some((
                RoomId::from_hash(&global_room_sni(&g.name))?,
                g.name.clone(),
            ))
        })
        .collect()
}

/// What one reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Federation peers added, removed, changed (by label).
    pub peers: PeerChanges,
    /// Call rooms added.
    pub calls_added: Vec<String>,
    /// Call rooms taken out (closed).
    pub calls_removed: Vec<String>,
    /// Call rooms whose fingerprints changed.
    pub calls_changed: Vec<String>,
    /// Global rooms bridged from now on, and no longer (by their names in
    /// the file).
    pub global_added: Vec<String>,
    pub global_removed: Vec<String>,
    /// Settings of [`LIVE`] that changed and were applied, by name.
    pub settings: Vec<String>,
    /// The event log could not be opened again: why (it stays on the file
    /// it had).
    pub event_log_error: Option<String>,
    /// Settings that differ from the running ones and wait for a restart.
    pub restart_needed: Vec<String>,
}

impl Reloaded {
    /// One line for the log: what was added, removed and changed of peers,
    /// call rooms and global rooms, and what waits for a restart.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| v.join(",");
        let mut s = format!(
            "peers added=[{}] removed=[{}] changed=[{}]; calls added=[{}] removed=[{}] \
             changed=[{}]; global rooms added=[{}] removed=[{}]",
            list(&self.peers.added),
            list(&self.peers.removed),
            list(&self.peers.changed),
            list(&self.calls_added),
            list(&self.calls_removed),
            list(&self.calls_changed),
            list(&self.global_added),
            list(&self.global_removed),
        );
        if !self.settings.is_empty() {
            s.push_str(&format!("; settings applied=[{}]", list(&self.settings)));
        }
        if let Some(e) = &self.event_log_error {
            s.push_str(&format!(
                "; event log not reopened ({e}), still on its old file"
            ));
        }
        if !self.restart_needed.is_empty() {
            s.push_str(&format!(
                "; not applied until a restart: {}",
                self.restart_needed.join(", ")
            ));
        }
        s
    }
}

/// The tables a reload applies.
const RELOADED: [&str; 4] = ["peers", "trusted", "calls", "global_rooms"];

/// The settings a reload applies (see the module documentation).
pub const LIVE: [&str; 7] = [
    "call_room_size",
    "debug_tap",
    "event_log",
    "join_max_skew_s",
    "join_timeout_ms",
    "max_room_size",
    "ringing_timeout_s",
];

/// Top-level settings that differ between `a` and `b`, by their names in
/// the file.
fn differing(a: &Config, b: &Config) -> Vec<String> {
    let table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::map::Map::new(),
    };
    let (a, b) = (table(a), table(b));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Top-level settings of `new` that differ from `running` and that a reload
/// does not apply, by their names in the file.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    differing(running, new)
        .into_iter()
        .filter(|k| !RELOADED.contains(&k.as_str()) && !LIVE.contains(&k.as_str()))
        .collect()
}

/// The settings of [`LIVE`] that differ between `applied` and `new`.
pub fn live_changes(applied: &Config, new: &Config) -> Vec<String> {
    differing(applied, new)
        .into_iter()
        .filter(|k| LIVE.contains(&k.as_str()))
        .collect()
}

/// Applies `new` (already validated) to the running relay; see the module
/// documentation for what changes. `None` if the federation service has
/// stopped (the relay is shutting down).
pub async fn reload(services: &Services, new: &Config) -> Option<Reloaded> {
    let mut done = Reloaded {
        restart_needed: restart_needed(&services.cfg, new),
        ..Reloaded::default()
    };
    apply_settings(services, new, &mut done).await;
    // The federation first: a call room's change then meets the links it
    // will have.
    let fed = new.federation(services.tls_fingerprint, 0);
    done.peers = services.federation.set_peers(fed.peers).await?;
    let (added, dropped) = services
        .federation
        .set_global_rooms(fed.global_rooms)
        .await?;
    let global = global_rooms(new);
    let old_global = {
        let mut applied = services.applied.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut applied.global, global.clone())
    };
    let name = |id: &RoomId, list: &[(RoomId, String)]| {
        list.iter()
            .find(|(r, _)| r == id)
            .map_or_else(|| id.to_string(), |(_, n)| n.clone())
    };
    done.global_added = added.iter().map(|id| name(id, &global)).collect();
    done.global_removed = dropped.iter().map(|id| name(id, &old_global)).collect();

    let old = {
        let mut applied = services.applied.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut applied.calls, new.calls.clone())
    };
    for c in &old {
        if !new.calls.iter().any(|n| n.room == c.room) {
            let reason = format!("call room {} was taken out of the relay's config", c.room);
            services
                .rooms
                .close_call(&c.room, CloseCode::NotAuthorized, &reason);
            done.calls_removed.push(c.room.clone());
        }
    }
    for n in &new.calls {
        match old.iter().find(|c| c.room == n.room) {
            None => {
                services.rooms.allow_call(&n.room, n.fingerprints.clone());
                done.calls_added.push(n.room.clone());
            }
            Some(c) if c.fingerprints != n.fingerprints => {
                services.rooms.restrict_call(
                    &n.room,
                    n.fingerprints.clone(),
                    CloseCode::NotAuthorized,
                    "your fingerprint was taken out of this call room in the relay's config",
                );
                done.calls_changed.push(n.room.clone());
            }
            Some(_) => {}
        }
    }
    Some(done)
}

/// The settings in force (`/config`): what the relay started with, with
/// what reloads applied ([`RELOADED`], [`LIVE`]) from `applied` laid over
/// it, and the settings of `applied` (the file as last read) that wait for
/// a restart.
pub fn in_force(started: &Config, applied: &Config) -> serde_json::Value {
    let mut now = serde_json::to_value(started).unwrap_or_default();
    let last = serde_json::to_value(applied).unwrap_or_default();
    if let (Some(now), Some(last)) = (now.as_object_mut(), last.as_object()) {
        for k in RELOADED.iter().chain(LIVE.iter()) {
            match last.get(*k) {
                Some(v) => now.insert(k.to_string(), v.clone()),
                None => now.remove(*k),
            };
        }
    }
    serde_json::json!({
        "in_force": now,
        "restart_needed": restart_needed(started, applied),
    })
}

/// [`in_force`] of the running relay.
pub fn view(services: &Services) -> serde_json::Value {
    let applied = services.applied.lock().unwrap_or_else(|p| p.into_inner());
    in_force(&services.cfg, &applied.cfg)
}

/// Applies the settings of [`LIVE`] and opens the event log again.
async fn apply_settings(services: &Services, new: &Config, done: &mut Reloaded) {
    let previous = {
        let mut applied = services.applied.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut applied.cfg, new.clone())
    };
    done.settings = live_changes(&previous, new);
    services.live.set(new);
    services.rooms.set_limits(
        services,
        new.call_room_size,
        new.max_room_size,
        new.debug_tap.clone(),
    );
    if new.ringing_timeout_s != previous.ringing_timeout_s {
        services
            .signal
            .set_ringing_timeout(std::time::Duration::from_secs(new.ringing_timeout_s))
            .await;
    }
    if let Err(e) = services.reopen_event_log(new.event_log.as_deref()) {
        let path = new.event_log.as_deref().unwrap_or(std::path::Path::new(""));
        done.event_log_error = Some(format!("cannot open {}: {e}", path.display()));
        // The path in force stays the one whose file is open.
        services
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cfg
            .event_log = previous.event_log;
        done.settings.retain(|k| k != "event_log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("test.toml")).expect("a valid config")
    }

    #[test]
    fn only_settings_a_reload_does_not_apply_wait_for_a_restart() {
        let running = parse("label = \"a\"\nmax_rooms = 100\n");
        let same = parse("label = \"a\"\nmax_rooms = 100\n");
        assert!(restart_needed(&running, &same).is_empty());

        let peers = parse(
            "label = \"a\"\nmax_rooms = 100\n[[trusted]]\nfingerprint = \"\
             00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:\
             00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff\"\nlabel = \"b\"\n\
             [[global_rooms]]\nname = \"general\"\n",
        );
        assert!(
            restart_needed(&running, &peers).is_empty(),
            "peers, trusted relays and global rooms are applied"
        );

        let moved = parse("label = \"c\"\nmax_rooms = 7\nlisten = \"127.0.0.1:5000\"\n");
        assert_eq!(
            restart_needed(&running, &moved),
            ["label", "listen", "max_rooms"]
        );
        // A setting given in one file and left to its default in the other.
        let unset = parse("max_rooms = 100\n");
        assert_eq!(restart_needed(&running, &unset), ["label"]);

        // The settings applied running are never named for a restart, and
        // are named as changed.
        let live = parse(
            "label = \"a\"\nmax_rooms = 100\ncall_room_size = 3\nmax_room_size = 9\n\
             join_timeout_ms = 900\njoin_max_skew_s = 30\nringing_timeout_s = 5\n\
             debug_tap = \"*\"\nevent_log = \"/tmp/e.jsonl\"\n",
        );
        assert!(restart_needed(&running, &live).is_empty());
        assert_eq!(live_changes(&running, &live), LIVE);
        assert!(live_changes(&running, &moved).is_empty());
        assert!(live_changes(&live, &live).is_empty());
    }

    #[test]
    fn the_settings_in_force_are_the_start_with_what_reloads_applied() {
        let started = parse("max_rooms = 100\nmax_room_size = 4\n");
        let file = parse(
            "max_rooms = 7\nmax_room_size = 9\ndebug_tap = \"*\"\n\
             [[global_rooms]]\nname = \"general\"\n",
        );
        let v = in_force(&started, &file);
        let now = &v["in_force"];
        assert_eq!(now["max_rooms"], 100, "waits for a restart: {v}");
        assert_eq!(now["max_room_size"], 9, "{v}");
        assert_eq!(now["debug_tap"], "*", "{v}");
        assert_eq!(now["global_rooms"][0]["name"], "general", "{v}");
        assert_eq!(v["restart_needed"], serde_json::json!(["max_rooms"]));
        // A setting the file no longer gives is in force as its default.
        let v = in_force(&file, &started);
        assert!(v["in_force"]["debug_tap"].is_null(), "{v}");
        assert_eq!(v["in_force"]["max_rooms"], 7, "{v}");
    }
}
