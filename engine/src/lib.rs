//! # wzp-engine
//!
//! Runs graphs of stages. A graph is written in TOML ([`spec`]), validated
//! and compiled off the real-time thread ([`compile`](mod@compile)) into per-domain
//! schedules, and run by [`exec::Graph`] on a timer thread, as fast as
//! possible, or stepped by hand. Every stage's wait and busy time per cycle
//! is recorded without locks ([`timing`], [`stats`]).
//!
//! The engine knows nothing about audio or networks: binaries register stage
//! kinds in a [`Registry`]. See `docs/DESIGN.md` and `docs/GRAPHS.md`.
//!
//! ```
//! use wzp_engine::prelude::*;
//!
//! // A stage kind defined right here: writes a constant.
//! struct Dc;
//! struct DcProc(f32);
//! impl Processor for DcProc {
//!     fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
//!         io.pcm_out(0).fill(self.0);
//!         Flow::Continue
//!     }
//! }
//! impl StageFactory for Dc {
//!     fn info(&self) -> StageInfo {
//!         StageInfo {
//!             kind: "demo.dc",
//!             summary: "a constant signal",
//!             inputs: vec![],
//!             outputs: vec![PortInfo { name: "out", ty: "Pcm@rate", doc: "the signal" }],
//!             params: vec![ParamSpec::float("level", 0.5, "sample value")],
//!             default_domain: Domain::Clocked,
//!             domains: &[Domain::Clocked],
//!         }
//!     }
//!     fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
//!         Ok(Built {
//!             inputs: vec![],
//!             outputs: vec![PortDecl::new("out", PortType::Pcm { rate: cx.rate })],
//!             latency: std::time::Duration::ZERO,
//!             processor: Box::new(DcProc(p.float("level")? as f32)),
//!         })
//!     }
//! }
//!
//! let mut registry = Registry::new();
//! registry.register(Dc).unwrap();
//! let text = r#"
//! [graph]
//! name = "doc"
//! clock = { driver = "manual", quantum_ms = 20, rate = 48000 }
//! [[stage]]
//! id = "dc"
//! kind = "demo.dc"
//! "#;
//! let spec = GraphSpec::parse(text, "doc.toml", &Default::default()).unwrap();
//! let compiled = compile(&spec, &registry, &Resources::new()).unwrap();
//! let mut graph = Graph::new(compiled);
//! graph.step();
//! assert_eq!(graph.stats().snapshot().stages[0].busy.count, 1);
//! ```

pub mod bridge;
pub mod compile;
pub mod error;
pub mod exec;
pub mod explain;
pub mod files;
pub mod params;
pub mod port;
pub mod registry;
pub mod rt;
#[cfg(any(test, feature = "rt-check"))]
pub mod rt_check;
pub mod spec;
pub mod stage;
pub mod stats;
pub mod timing;

pub use compile::{compile, CompiledGraph};
pub use error::{ErrorKind, GraphError, GraphErrors};
pub use exec::{Graph, RunOptions};
pub use registry::Registry;
pub use spec::GraphSpec;

/// Everything a stage author needs.
pub mod prelude {
    pub use crate::compile::{compile, CompiledGraph};
    pub use crate::exec::{Graph, RunOptions};
    pub use crate::params::{ParamError, ParamSpec, ParamType, ParamValue, Params};
    pub use crate::port::{
        frame_flags, Batch, FecTag, FrameMeta, PacketMeta, PortDecl, PortType, PushError, Slot,
        MAX_ITEM_BYTES,
    };
    pub use crate::registry::Registry;
    pub use crate::spec::{ClockDriver, ClockSpec, GraphSpec, StageSpec};
    pub use crate::stage::{
        BuildContext, BuildError, Built, Counter, Cx, Domain, Flow, Gauge, Io, PortInfo, Processor,
        Resources, StageFactory, StageInfo,
    };
}
