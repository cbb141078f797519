//! Graph files are outside input: parsing and compiling any text must return
//! a graph or errors, never panic or hang. The stage kinds here are pure (no
//! files), with ports of every type, required/optional inputs, params of
//! every type and a factory that refuses, so validation paths are reached.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wzp_engine::prelude::*;

struct Kind(&'static str, PortType, usize, usize, bool);
struct Nop;
impl Processor for Nop {
    fn process(&mut self, _io: &mut Io<'_>, _cx: &Cx) -> Flow {
        Flow::Continue
    }
}
impl StageFactory for Kind {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: self.0,
            summary: "fuzz",
            inputs: vec![],
            outputs: vec![],
            params: vec![
                ParamSpec::float("gain", 0.0, ""),
                ParamSpec::int("n", 1, ""),
                ParamSpec::bool("on", false, ""),
                ParamSpec::duration("d", Duration::from_millis(20), ""),
                ParamSpec::str("s", "", ""),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        if self.4 {
            return Err(BuildError::Other("refused".into()));
        }
        let n = p.int_in("n", 0, 8)? as usize;
        let ty = match self.1 {
            PortType::Pcm { .. } => PortType::Pcm { rate: cx.rate },
            t => t,
        };
        let inputs = (0..self.2 + n).map(|i| if i == 0 { PortDecl::new(format!("in{i}"), ty) } else { PortDecl::optional(format!("in{i}"), ty) }).collect();
        let outputs = (0..self.3).map(|i| PortDecl::new(format!("out{i}"), ty)).collect();
        let _ = cx.counter("c");
        Ok(Built { inputs, outputs, latency: p.duration("d")?, processor: Box::new(Nop) })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut reg = Registry::new();
    let _ = reg.register(Kind("f.pcm", PortType::Pcm { rate: 0 }, 1, 1, false));
    let _ = reg.register(Kind("f.src", PortType::Pcm { rate: 0 }, 0, 2, false));
    let _ = reg.register(Kind("f.frame", PortType::Frame, 1, 1, false));
    let _ = reg.register(Kind("f.packet", PortType::Packet, 1, 1, false));
    let _ = reg.register(Kind("f.fail", PortType::Frame, 0, 1, true));
    let vars = BTreeMap::from([("x".to_string(), "1".to_string())]);
    let _ = GraphSpec::check_var_names(text, "fuzz.toml", ["x", "input"]);
    if let Ok(spec) = GraphSpec::parse(text, "fuzz.toml", &vars) {
        if spec.stages.len() > 64 {
            return;
        }
        if let Ok(compiled) = compile(&spec, &reg, &Resources::new()) {
            let _ = wzp_engine::explain::explain(&compiled);
            let mut g = Graph::new(compiled);
            g.step();
        }
    }
});
