//! The call graph a call runs: graphs/call.toml with `src` and `sink`
//! matching `--input` and `--output`, and the Opus profile that fits the
//! path.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use wzp_engine::prelude::*;
use wzp_engine::spec::RawParam;
use wzp_stages::codec::profile::{Profile, PROFILES};
use wzp_stages::crypto::keys::MIN_ROOM_SECRET;

use super::CallOptions;

/// The call graph that ships, built into the binary.
pub const CALL_GRAPH: &str = include_str!("../../../graphs/call.toml");
/// How errors name the built-in call graph.
const BUILT_IN_CALL_GRAPH: &str = "graphs/call.toml (built in)";

fn set_stage(
    spec: &mut GraphSpec,
    id: &str,
    kind: &str,
    params: &[(&str, toml::Value)],
) -> Result<()> {
    let st = spec
        .stages
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| anyhow!("the call graph has no `{id}` stage"))?;
    st.kind = kind.to_string();
    st.params = params
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                RawParam {
                    value: v.clone(),
                    loc: Default::default(),
                },
            )
        })
        .collect();
    Ok(())
}

/// The call graph for these options, with `src` and `sink` matching
/// `--input` and `--output`.
/// The audio device `--input` names: `mic` (the default device) or
/// `mic:NAME` (`wzp-client devices` lists them); `None` for anything else.
pub fn microphone(input: &str) -> Option<&str> {
    device_of(input, "mic")
}

/// The audio device `--output` names: `speaker` or `speaker:NAME`.
pub fn speaker(output: &str) -> Option<&str> {
    device_of(output, "speaker")
}

fn device_of<'a>(arg: &'a str, word: &str) -> Option<&'a str> {
    if arg == word {
        return Some(wzp_stages::audio::device::DEFAULT_DEVICE);
    }
    arg.strip_prefix(word)?.strip_prefix(':')
}

pub fn call_spec(opts: &CallOptions, room_secret: &str) -> Result<GraphSpec> {
    let mut vars = BTreeMap::new();
    vars.insert("room".to_string(), opts.room.clone());
    vars.insert("room_secret".to_string(), room_secret.to_string());
    let input = opts.input.as_str();
    let output = opts.output.as_str();
    let mic = microphone(input);
    let spk = speaker(output);
    if input == "tone" || input.starts_with("tone:") || mic.is_some() {
        vars.insert("input_rate".into(), "48000".into());
    }
    if mic.is_some() {
        // A room is heard with the voice: turn its steady noise down (a
        // --set noise_suppress=false below still turns it off).
        vars.insert("noise_suppress".into(), "true".into());
        // ... and bring the voice to one level, whatever the microphone.
        vars.insert("agc".into(), "true".into());
    }
    if spk.is_some() {
        vars.insert("output_rate".into(), "48000".into());
        if mic.is_some() {
            // The microphone hears the speaker: cancel its echo (a --set
            // echo_cancel=false below still turns it off).
            vars.insert("echo_cancel".into(), "true".into());
            // ... and let it find the speaker before the far end talks
            // (--set chime=none: silence).
            vars.insert("chime".into(), "connected".into());
        }
    }
    if output != "null" && spk.is_none() {
        vars.insert("output".into(), output.to_string());
    }
    if opts.controls.is_some() {
        // A person's call: a second call waiting beeps under it while the
        // client holds the gate open (--set waiting_tone=none: silence).
        vars.insert("waiting_tone".into(), "waiting".into());
        // ... and a call the other party holds beeps now and then.
        vars.insert("hold_tone".into(), "hold".into());
    }
    if !(input == "tone" || input.starts_with("tone:") || mic.is_some()) {
        let path = if input == "builtin" {
            "builtin:speech"
        } else {
            input
        };
        vars.insert("input".into(), path.to_string());
    }
    match &opts.joined {
        Some(crate::call::Joined::Main { from, to, .. }) => {
            vars.insert("conf_in".into(), from.0.clone());
            vars.insert("conf_out".into(), to.0.clone());
        }
        Some(crate::call::Joined::Leg { .. }) => {
            vars.insert("input_rate".into(), "48000".into());
            vars.insert("output_rate".into(), "48000".into());
        }
        None => {}
    }
    // Only the user's --set names are checked: the ones filled above are
    // the client's own.
    check_options(opts)?;
    vars.extend(opts.sets.clone());
    let mut spec = match &opts.graph {
        Some(path) => GraphSpec::load(path, &vars).map_err(|e| anyhow!("{e}"))?,
        None => {
            GraphSpec::parse(CALL_GRAPH, BUILT_IN_CALL_GRAPH, &vars).map_err(|e| anyhow!("{e}"))?
        }
    };
    let v = |x: &str| toml::Value::String(x.to_string());
    if let Some(freq) = input
        .strip_prefix("tone:")
        .or((input == "tone").then_some("440"))
    {
        let f: f64 = freq
            .parse()
            .map_err(|_| anyhow!("--input {input}: expected tone or tone:FREQ_HZ"))?;
        set_stage(
            &mut spec,
            "src",
            "audio.tone_source",
            &[
                ("freq", toml::Value::Float(f)),
                ("level_db", toml::Value::Float(-12.0)),
                ("rate", toml::Value::Integer(48_000)),
            ],
        )?;
    } else if let Some(device) = mic {
        set_stage(
            &mut spec,
            "src",
            "audio.device_capture",
            &[
                ("rate", toml::Value::Integer(48_000)),
                ("device", v(device)),
            ],
        )?;
    }
    match output {
        "null" => set_stage(
            &mut spec,
            "sink",
            "audio.null_sink",
            &[("rate", v(vars_get(&vars, "output_rate", "16000")))],
        )?,
        _ => {
            if let Some(device) = spk {
                set_stage(
                    &mut spec,
                    "sink",
                    "audio.device_playout",
                    &[
                        ("rate", toml::Value::Integer(48_000)),
                        ("device", v(device)),
                    ],
                )?
            }
        }
    }
    if let Some(crate::call::Joined::Leg { from, to, .. }) = &opts.joined {
        // The other call of two joined: no device, the buses instead.
        let rate = ("rate", toml::Value::Integer(48_000));
        set_stage(
            &mut spec,
            "src",
            "audio.bus_source",
            &[("bus", v(&from.0)), rate.clone()],
        )?;
        set_stage(
            &mut spec,
            "sink",
            "audio.bus_sink",
            &[("bus", v(&to.0)), rate],
        )?;
        return Ok(spec);
    }
    if let Some(path) = &opts.record {
        spec = with_recording(spec, path)?;
    }
    Ok(spec)
}

/// `spec` recording the call to `path` (`--record`): what this side sends
/// (the `mute` stage's output: after the echo canceller, the noise
/// suppressor and the gain, silent while muted) mixed with what it hears
/// (`mix`), 48 kHz mono, in stages `rec_mix` and `rec`.
pub fn with_recording(spec: GraphSpec, path: &std::path::Path) -> Result<GraphSpec> {
    let has = |id: &str| spec.stages.iter().any(|s| s.id == id);
    for id in ["mute", "mix"] {
        if !has(id) {
            bail!(
                "--record needs the call graph's `mute` (what this side sends) and `mix` \
                 (what it hears) stages; {} has no `{id}`",
                spec.file
            );
        }
    }
    for id in ["rec_mix", "rec"] {
        if has(id) {
            bail!(
                "--record adds the stages `rec_mix` and `rec`; {} already has a `{id}`",
                spec.file
            );
        }
    }
    let mut spec = spec;
    spec.stages
        .push(StageSpec::new("rec_mix", "audio.mix").param("inputs", 2i64));
    spec.stages.push(
        StageSpec::new("rec", "audio.wav_sink")
            .param("path", path.to_string_lossy().into_owned())
            .param("rate", 48_000i64)
            .param("buffer", "10m"),
    );
    Ok(spec
        .link("mute.out", "rec_mix.in0")
        .link("mix.out", "rec_mix.in1")
        .link("rec_mix.out", "rec.in"))
}

/// The profile the call graph's Opus encoder sends with (`None` when the
/// graph has no Opus encoder, or names no known profile).
pub fn sending_profile(spec: &GraphSpec) -> Option<&'static Profile> {
    let enc = spec
        .stages
        .iter()
        .find(|s| ENCODERS.contains(&s.kind.as_str()))?;
    let name = match enc.params.get("profile") {
        Some(p) => p.value.as_str()?,
        None => "good",
    };
    Profile::by_name(name).filter(|p| p.is_opus())
}

/// `spec` with every Opus encoder and decoder set to `profile`, and the
/// quality controller's best tier with them.
pub fn with_profile(spec: &GraphSpec, profile: &Profile) -> GraphSpec {
    let mut spec = spec.clone();
    for st in spec.stages.iter_mut().filter(|s| {
        let k = s.kind.as_str();
        ENCODERS.contains(&k) || DECODERS.contains(&k) || k == ADAPT
    }) {
        let key = if st.kind == ADAPT {
            "top_tier"
        } else {
            "profile"
        };
        st.params.insert(
            key.into(),
            RawParam {
                value: toml::Value::String(profile.name.into()),
                loc: Default::default(),
            },
        );
    }
    spec
}

/// The profile to send with on a path that takes `limit`-byte datagrams:
/// `wanted` when it fits, else the best Opus profile that does (studio
/// tiers only where they fit). `None`: keep `wanted` (nothing better fits).
pub fn profile_for_path(wanted: &'static Profile, limit: usize) -> Option<&'static Profile> {
    wanted.fitting(limit).filter(|p| p.is_opus()).or_else(|| {
        PROFILES
            .iter()
            .filter(|p| p.is_opus() && p.max_datagram_bytes() <= limit)
            .max_by_key(|p| p.bitrate)
    })
}

/// The encoder stage kinds a call graph may send with.
const ENCODERS: [&str; 2] = ["codec.opus_encode", "codec.adaptive_encode"];
/// The decoder stage kinds whose profile follows the encoder's.
pub const DECODERS: [&str; 2] = ["codec.opus_decode", "codec.adaptive_decode"];
const ADAPT: &str = "quality.adapt";

fn vars_get<'a>(vars: &'a BTreeMap<String, String>, k: &str, d: &'a str) -> &'a str {
    vars.get(k).map(String::as_str).unwrap_or(d)
}

/// The secret the room key comes from. Without one, a secret derived from
/// the room name is used, and anyone who knows the name can listen: say so.
pub fn room_secret(opts: &CallOptions) -> String {
    match &opts.room_secret {
        Some(s) => s.clone(),
        None => {
            eprintln!(
                "{}warning: no --room-secret; the media key comes from the room name, so anyone who knows `{}` can listen",
                opts.label, opts.room
            );
            open_room_secret(&opts.room)
        }
    }
}

/// Gives the call graph's sender and receive paths one
/// [`wzp_stages::wire::LocalSender`] cell named `resource`: the one
/// `wire.packetize` publishes its (random) sender id into it
/// (`publish_sender`) and every `crypto.open` drops packets carrying that id
/// (`local_sender`), so a client never plays its own voice echoed back.
/// Returns whether it was wired: not when the graph has no single
/// packetizer with one id (`sender_id = 0`), or already names cells.
pub fn use_local_sender(spec: &mut GraphSpec, resource: &str) -> bool {
    let packers: Vec<usize> = spec
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "wire.packetize")
        .map(|(i, _)| i)
        .collect();
    let [pack] = packers[..] else {
        return false;
    };
    let param = |st: &wzp_engine::spec::StageSpec, k: &str| -> Option<String> {
        st.params.get(k).map(|p| match &p.value {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
    };
    let st = &spec.stages[pack];
    if param(st, "sender_id").as_deref() == Some("0")
        || param(st, "publish_sender").is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    let cell = || RawParam {
        value: toml::Value::String(resource.into()),
        loc: Default::default(),
    };
    spec.stages[pack]
        .params
        .insert("publish_sender".into(), cell());
    // `open` drops that id; `adapt` reads the feedback entries about it.
    for st in spec
        .stages
        .iter_mut()
        .filter(|s| s.kind == "crypto.open" || s.kind == "quality.adapt")
    {
        if param(st, "local_sender").is_none_or(|v| v.is_empty()) {
            st.params.insert("local_sender".into(), cell());
        }
    }
    true
}

/// Points every `crypto.seal` and `crypto.open` stage of `spec` at the
/// `SessionKeys` resource `resource` (a direct call's keys), dropping the
/// room key params.
pub fn use_session_keys(spec: &mut GraphSpec, resource: &str) -> Result<()> {
    let mut found = 0;
    for st in spec
        .stages
        .iter_mut()
        .filter(|s| s.kind == "crypto.seal" || s.kind == "crypto.open")
    {
        st.params.remove("room");
        st.params.remove("room_secret");
        st.params.remove("key");
        st.params.insert(
            "session".into(),
            RawParam {
                value: toml::Value::String(resource.into()),
                loc: Default::default(),
            },
        );
        found += 1;
    }
    if found == 0 {
        return Err(anyhow!(
            "the call graph has no crypto.seal / crypto.open stage to take the call keys"
        ));
    }
    Ok(())
}

/// The secret of a room joined without `--room-secret` (shared with the
/// relay, which names open global rooms by it).
pub use wzp_stages::crypto::keys::open_room_secret;

/// Checks a call's options before anything is created or dialled: the
/// `--set` names against the call graph's placeholders, and a
/// `--room-secret` against the minimum length the room key needs.
/// Placeholders the client fills from its own options: a `--set` of one
/// would change the graph behind the option's back (`room_secret` changed
/// the media key but not the room admitted to: no one could hear).
const OWN_PLACEHOLDERS: &[(&str, &str)] = &[
    ("room", "--room"),
    ("room_secret", "--room-secret"),
    ("input", "--input"),
    ("output", "--output"),
];

pub fn check_options(opts: &CallOptions) -> Result<()> {
    for name in opts.sets.keys() {
        if let Some((_, flag)) = OWN_PLACEHOLDERS.iter().find(|(n, _)| n == name) {
            bail!("--set {name}=...: `{name}` comes from {flag}; use that option instead");
        }
    }
    // The rates are the client's only where it fills them (a tone or the
    // microphone at 48 kHz, the speaker at 48 kHz); for a WAV they are how
    // it is read or written (`--set output_rate=48000` records at 48 kHz).
    let input = opts.input.as_str();
    if opts.sets.contains_key("input_rate")
        && (input == "tone" || input.starts_with("tone:") || microphone(input).is_some())
    {
        bail!("--set input_rate=...: --input {input} runs at 48000 Hz; input_rate applies to a WAV input");
    }
    if opts.sets.contains_key("output_rate") && speaker(&opts.output).is_some() {
        bail!("--set output_rate=...: --output speaker runs at 48000 Hz; output_rate applies to a WAV output");
    }
    if opts.room.trim().is_empty() {
        bail!("--room is empty; give the room's name");
    }
    if opts.input.trim().is_empty() {
        bail!(
            "--input is empty; give a WAV file, `tone`, `tone:HZ`, `builtin` or `mic` \
             (an unset shell variable would otherwise play the built-in sample)"
        );
    }
    for (flag, arg, device) in [
        ("--input", &opts.input, microphone(&opts.input)),
        ("--output", &opts.output, speaker(&opts.output)),
    ] {
        if device.is_some_and(|d| d.trim().is_empty()) {
            bail!(
                "{flag} {arg:?}: name a device after the colon (`wzp-client devices` lists them)"
            );
        }
    }
    if let Some(secret) = &opts.room_secret {
        if secret.len() < MIN_ROOM_SECRET {
            bail!(
                "--room-secret is {} bytes; a room secret needs at least {MIN_ROOM_SECRET}. \
                 Make one with `head -c 24 /dev/urandom | base64` and give it to the room's members \
                 (or leave --room-secret out for an open room anyone who knows its name can hear)",
                secret.len()
            );
        }
    }
    match &opts.graph {
        Some(path) => crate::cli::vars::check_file(path, &opts.sets),
        None => crate::cli::vars::check_text(CALL_GRAPH, BUILT_IN_CALL_GRAPH, &opts.sets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_room_secrets_are_long_enough_and_keep_long_names_as_they_were() {
        for room in ["", "x", "ab", "standup", "a-much-longer-room-name"] {
            let s = open_room_secret(room);
            assert!(s.len() >= MIN_ROOM_SECRET, "{room:?}: {s:?}");
            assert!(s.starts_with(&format!("wzp-open-room:{room}")), "{s:?}");
        }
        assert_eq!(open_room_secret("x"), "wzp-open-room:x~");
        assert_eq!(open_room_secret("standup"), "wzp-open-room:standup");
        assert_ne!(open_room_secret("a"), open_room_secret("b"));
    }
}
