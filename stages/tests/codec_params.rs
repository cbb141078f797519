//! Bad params for every codec stage are refused at build time with an error
//! that names the param and says what to use; good ones build and, in a
//! graph, compile with the declared latency.

mod codec_support;

use codec_support::*;
use wzp_engine::prelude::*;
use wzp_engine::ErrorKind;
use wzp_stages::codec::codec2_decode::Codec2DecodeFactory;
use wzp_stages::codec::codec2_encode::Codec2EncodeFactory;
use wzp_stages::codec::opus_decode::OpusDecodeFactory;
use wzp_stages::codec::opus_encode::OpusEncodeFactory;

type Case = (
    &'static str,
    Vec<(&'static str, ParamValue)>,
    &'static str,
    &'static str,
);

fn expect_refused(factory: &dyn StageFactory, cases: Vec<Case>) {
    for (what, over, param, hint) in cases {
        match Harness::try_new(factory, &over) {
            Ok(_) => panic!("{}: {what} was accepted", factory.info().kind),
            Err(BuildError::Param(e)) => {
                assert_eq!(e.param, param, "{what}: blamed the wrong param");
                assert!(
                    e.message.contains(hint),
                    "{what}: message {:?} does not say {hint:?}",
                    e.message
                );
            }
            Err(BuildError::Other(m)) => panic!("{what}: not a param error: {m}"),
        }
    }
}

#[test]
fn opus_encode_rejects_bad_params() {
    expect_refused(
        &OpusEncodeFactory,
        vec![
            (
                "unknown profile",
                vec![("profile", str_("superb"))],
                "profile",
                "good, fair",
            ),
            (
                "codec2 profile",
                vec![("profile", str_("catastrophic"))],
                "profile",
                "codec2_encode",
            ),
            (
                "bitrate too low",
                vec![("bitrate", int(100))],
                "bitrate",
                "500..=512000",
            ),
            (
                "bitrate too high",
                vec![("bitrate", int(600_000))],
                "bitrate",
                "500..=512000",
            ),
            (
                "negative bitrate",
                vec![("bitrate", int(-5))],
                "bitrate",
                "500..=512000",
            ),
            (
                "frame 30 ms",
                vec![("frame_ms", int(30))],
                "frame_ms",
                "10, 20, 40 or 60",
            ),
            (
                "frame 2.5 ms",
                vec![("frame_ms", int(2))],
                "frame_ms",
                "10, 20, 40 or 60",
            ),
            (
                "complexity 11",
                vec![("complexity", int(11))],
                "complexity",
                "0..=10",
            ),
            (
                "application",
                vec![("application", str_("music"))],
                "application",
                "voip, audio",
            ),
            (
                "loss 101",
                vec![("expected_loss", int(101))],
                "expected_loss",
                "0..=100",
            ),
            (
                "loss -2",
                vec![("expected_loss", int(-2))],
                "expected_loss",
                "0..=100",
            ),
            (
                "dred too long",
                vec![("dred_ms", int(1050))],
                "dred_ms",
                "0..=1040",
            ),
            (
                "dred not 10 ms",
                vec![("dred_ms", int(205))],
                "dred_ms",
                "multiple of 10",
            ),
            (
                "stream negative",
                vec![("stream", int(-1))],
                "stream",
                "0..=",
            ),
            (
                "max_packet_bytes 7",
                vec![("max_packet_bytes", int(7))],
                "max_packet_bytes",
                "8..=1275",
            ),
        ],
    );
}

#[test]
fn opus_decode_rejects_bad_params() {
    expect_refused(
        &OpusDecodeFactory,
        vec![
            (
                "codec2 profile",
                vec![("profile", str_("poor"))],
                "profile",
                "codec2_encode",
            ),
            (
                "lookahead 105",
                vec![("lookahead_frames", int(105))],
                "lookahead_frames",
                "0..=104",
            ),
            (
                "lookahead -1",
                vec![("lookahead_frames", int(-1))],
                "lookahead_frames",
                "0..=104",
            ),
            (
                "complexity 11",
                vec![("complexity", int(11))],
                "complexity",
                "0..=10",
            ),
            (
                "frame 25 ms",
                vec![("frame_ms", int(25))],
                "frame_ms",
                "10, 20, 40 or 60",
            ),
        ],
    );
}

#[test]
fn codec2_stages_reject_bad_params() {
    for f in [
        &Codec2EncodeFactory as &dyn StageFactory,
        &Codec2DecodeFactory,
    ] {
        expect_refused(
            f,
            vec![
                (
                    "opus profile",
                    vec![("profile", str_("good"))],
                    "profile",
                    "opus_encode",
                ),
                (
                    "unknown profile",
                    vec![("profile", str_("1200"))],
                    "profile",
                    "poor, catastrophic",
                ),
            ],
        );
    }
    expect_refused(
        &Codec2EncodeFactory,
        vec![(
            "stream too big",
            vec![("stream", int(1 << 33))],
            "stream",
            "0..=",
        )],
    );
}

#[test]
fn every_profile_builds_with_its_codec() {
    use wzp_stages::codec::profile::PROFILES;
    for p in PROFILES {
        let over = [("profile", str_(p.name))];
        if p.is_opus() {
            Harness::new(&OpusEncodeFactory, &over);
            Harness::new(&OpusDecodeFactory, &over);
        } else {
            Harness::new(&Codec2EncodeFactory, &over);
            Harness::new(&Codec2DecodeFactory, &over);
        }
    }
}

#[test]
fn declared_latencies() {
    let ms = |h: Harness| h.latency.as_secs_f64() * 1000.0;
    // 6.5 ms lookahead; a 20 ms frame needs no wait beyond the quantum.
    assert_eq!(ms(Harness::new(&OpusEncodeFactory, &[])), 6.5);
    // A 60 ms frame waits 40 ms more than the 20 ms quantum.
    assert_eq!(
        ms(Harness::new(&OpusEncodeFactory, &[("frame_ms", int(60))])),
        46.5
    );
    assert_eq!(ms(Harness::new(&OpusDecodeFactory, &[])), 20.0);
    assert_eq!(
        ms(Harness::new(
            &OpusDecodeFactory,
            &[("profile", str_("degraded")), ("lookahead_frames", int(3))]
        )),
        120.0
    );
    assert_eq!(
        ms(Harness::new(
            &OpusDecodeFactory,
            &[("lookahead_frames", int(0))]
        )),
        0.0
    );
}

/// `test.speech`: the speech-like signal, one quantum per cycle.
struct SpeechSource;
struct SpeechProc {
    x: Vec<f32>,
    at: usize,
}
impl Processor for SpeechProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let out = io.pcm_out(0);
        for o in out.iter_mut() {
            *o = self.x[self.at % self.x.len()];
            self.at += 1;
        }
        Flow::Continue
    }
}
impl StageFactory for SpeechSource {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.speech",
            summary: "speech-like test signal",
            inputs: vec![],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Pcm@48000",
                doc: "",
            }],
            params: vec![],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, _cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: 48_000 })],
            latency: std::time::Duration::ZERO,
            processor: Box::new(SpeechProc {
                x: speechlike(48_000),
                at: 0,
            }),
        })
    }
}

fn graph_text(enc_params: &str) -> String {
    format!(
        r#"
[graph]
name = "codec"
clock = {{ driver = "manual", quantum_ms = 20, rate = 48000 }}

[[stage]]
id = "src"
kind = "test.speech"

[[stage]]
id = "enc"
kind = "codec.opus_encode"
params = {{ {enc_params} }}

[[stage]]
id = "dec"
kind = "codec.opus_decode"
params = {{ lookahead_frames = 2 }}

[[link]]
from = "src.out"
to = "enc.in"

[[link]]
from = "enc.out"
to = "dec.in"
"#
    )
}

#[test]
fn codec_stages_run_in_a_graph_and_param_errors_name_the_stage() {
    let mut registry = wzp_stages::registry();
    registry.register(SpeechSource).unwrap();

    let spec = GraphSpec::parse(
        &graph_text("profile = \"fair\", dred_ms = 100"),
        "codec.toml",
        &Default::default(),
    )
    .unwrap();
    let compiled = compile(&spec, &registry, &Resources::new()).unwrap_or_else(|e| panic!("{e}"));
    let mut graph = Graph::new(compiled);
    for _ in 0..50 {
        graph.step();
    }
    let stats = graph.stats();
    let enc = stats.stage("enc").unwrap();
    let dec = stats.stage("dec").unwrap();
    assert_eq!(enc.counter("frames_encoded"), Some(50));
    assert_eq!(dec.counter("frames_decoded"), Some(48));
    assert_eq!(enc.latency.as_secs_f64() * 1000.0, 6.5);
    assert_eq!(dec.latency.as_secs_f64() * 1000.0, 40.0);

    let spec = GraphSpec::parse(
        &graph_text("dred_ms = 7"),
        "codec.toml",
        &Default::default(),
    )
    .unwrap();
    let errs = compile(&spec, &registry, &Resources::new())
        .err()
        .expect("dred_ms = 7 is refused");
    let e = errs
        .0
        .iter()
        .find(|e| e.kind == ErrorKind::BadParam || e.kind == ErrorKind::Build)
        .unwrap_or_else(|| panic!("no param error in {errs}"));
    assert_eq!(e.stage.as_deref(), Some("enc"));
    let text = e.to_string();
    assert!(
        text.contains("codec.toml") && text.contains("dred_ms") && text.contains("multiple of 10"),
        "{text}"
    );
}
