//! `wzp-client`: join a room through a relay, run the demo, run any graph,
//! explain it, list stage kinds. One file per subcommand in [`cli`]; a call's
//! graph and media connection in [`call`]; relay pinning in [`trust`]; the
//! people called by name in [`contacts`].

mod call;
mod cli;
mod contacts;
mod device;
mod history;
mod log_filter;
mod lookalike;
mod nat;
mod signal;
mod trust;

use clap::{Parser, Subcommand};

use cli::call::CallArgs;
use cli::demo::DemoArgs;
use cli::graph::GraphCommand;
use cli::join::JoinArgs;
use cli::listen::ListenArgs;
use cli::reflect::{ReflectArgs, VersionArgs};
use cli::run::RunArgs;

const EXAMPLES: &str = "\
Examples:
  wzp-client demo
      A relay and two clients on this machine: the built-in sample goes from one
      client to the other through the relay; writes out/demo-received.wav.
  wzp-client join --relay 203.0.113.7:4433 --room standup --room-secret \"$(cat room.secret)\"
      Join a room (microphone in, speaker out; --input/--output change that). On a
      speaker the far end's echo is taken out of the microphone (--set echo_cancel=false: off;
      --set echo_suppress=false: the linear filter alone, without the suppressor's 5 ms);
      a microphone's steady room noise is turned down too (--set noise_suppress=false: off).
  wzp-client join --relay 127.0.0.1:4433 --room test --input talk.wav --output heard.wav --duration 10s
      Join headless: send a WAV, record what the room says.
  wzp-client join --relay 203.0.113.7:4433 --room standup --room-secret \"$(cat room.secret)\" --record standup.wav
      Record the call, what you say mixed with what you hear; the others
      see you as `(recording)` in the room's line.
  wzp-client join --relay 203.0.113.7:4433,198.51.100.9:4433 --room standup --room-secret \"$(cat room.secret)\"
      Through the first relay that admits the call; if it dies or stops, the call
      moves to the next (relays that bridge the room: [[global_rooms]] on each).
  wzp-client join --relay 127.0.0.1:4433 --room test --set jb_burst_hold=0ms
      Least delay: hold nothing back to rebuild lost audio (default 60ms); your
      reports say so, and the talkers protect what you hear accordingly.
  wzp-client join --relay 127.0.0.1:4433 --room test --top
      A live view of the call: what you send and why, what you hear from
      each sender and how much was concealed, per-stage timings. In a call
      `m` mutes and unmutes the microphone, `q` hangs up; SIGUSR1 mutes,
      SIGUSR2 unmutes; --muted starts muted.
  wzp-client run graphs/loopback.toml
      Run the loopback graph on the built-in speech sample; writes out/loopback.wav.
  wzp-client run graphs/loopback.toml --set input=talk.wav --set output=/tmp/o.wav --top
      Run it on your own WAV with a live per-stage table.
  wzp-client run graphs/loopback.toml --set input_loop=true --clock timer --duration 10s --stats-json stats.json
      Run in real time for 10 s (the sample looped) and save the per-stage figures.
  wzp-client run graphs/echo-room.toml --duration 20s
      The echo canceller on a simulated speaker and microphone; writes out/echo-room.wav
      (--set echo_cancel=false to hear the echo it takes out, echo_suppress=false for the
      linear filter alone).
  wzp-client graph explain graphs/loopback.toml
      Show stages, ports, domains, bridges and the latency budget per path.
  wzp-client stages
      List every stage kind; `wzp-client stages audio.gain` shows one in full.
  wzp-client identity
      Print your fingerprint (people call you by it).
  wzp-client listen --relay 203.0.113.7:4433
      Wait for calls; `wzp-client call FINGERPRINT --relay 203.0.113.7:4433` calls.
  wzp-client contacts add alice FINGERPRINT
      Then `wzp-client call alice --relay ...`; listen shares your address only
      with contacts.
  wzp-client reflect --relay 203.0.113.7:4433
      Print this machine's address as the relay sees it.
  wzp-client devices
      The microphones and speakers, for --input mic:NAME and --output speaker:NAME.
  wzp-client history --missed
      The calls that rang while nobody answered.
  wzp-client replay-adapt --check call.log
      Take a call's adaptation decisions again from its `--set adapt_log=true` log.";

#[derive(Parser)]
#[command(name = "wzp-client", version = wzp_version(), about = "wzp client: calls, rooms, and media graphs", after_help = EXAMPLES)]
struct Cli {
    /// Log filter (e.g. `info`, `wzp_engine=debug`) [default: RUST_LOG, else warn].
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a graph file until its sources end, `--duration` passes, or Ctrl-C.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Join a room through a relay (runs graphs/call.toml).
    #[command(after_help = EXAMPLES)]
    Join(JoinArgs),
    /// A relay and two clients on this machine, one playing the built-in
    /// sample to the other.
    #[command(after_help = EXAMPLES)]
    Demo(DemoArgs),
    /// Inspect a graph without running it.
    #[command(after_help = EXAMPLES)]
    Graph {
        #[command(subcommand)]
        command: GraphCommand,
    },
    /// List the registered stage kinds, or describe one.
    #[command(after_help = EXAMPLES)]
    Stages {
        /// A kind to describe in full (e.g. `audio.gain`).
        kind: Option<String>,
    },
    /// Call a person by fingerprint through a relay.
    #[command(after_help = cli::call::CALL_EXAMPLES)]
    Call(CallArgs),
    /// The people you call by name: list, add, remove, verify.
    #[command(after_help = cli::contacts::EXAMPLES)]
    Contacts(cli::contacts::ContactsArgs),
    /// Register at a relay and answer incoming calls.
    #[command(after_help = cli::listen::LISTEN_EXAMPLES)]
    Listen(ListenArgs),
    /// Leave a voice message for a person (sealed to them; their relay keeps it).
    #[command(after_help = cli::message::MESSAGE_EXAMPLES)]
    Message(cli::message::MessageArgs),
    /// Fetch the voice messages left for you, as WAV files.
    #[command(after_help = cli::message::MESSAGES_EXAMPLES)]
    Messages(cli::message::MessagesArgs),
    /// The calls made and taken (`call` and `listen` keep them).
    #[command(after_help = cli::history::EXAMPLES)]
    History(cli::history::ShowArgs),
    /// List the audio devices (`--input mic:NAME`, `--output speaker:NAME`).
    #[command(after_help = cli::devices::EXAMPLES)]
    Devices,
    /// Print this machine's address as a relay sees it.
    #[command(after_help = cli::reflect::REFLECT_EXAMPLES)]
    Reflect(ReflectArgs),
    /// Print a relay's version and build.
    #[command(name = "version-check", after_help = cli::reflect::VERSION_EXAMPLES)]
    VersionCheck(VersionArgs),
    /// Print this client's fingerprint (creating the identity on first use),
    /// or back it up / restore it as 24 recovery words.
    #[command(after_help = cli::identity::EXAMPLES)]
    Identity(cli::identity::IdentityArgs),
    /// Take a call's quality-controller decisions again from the inputs it
    /// logged (`--set adapt_log=true`), and compare them with its own.
    #[command(name = "replay-adapt", after_help = cli::replay::EXAMPLES)]
    ReplayAdapt(cli::replay::ReplayArgs),
}

/// The version `--version` prints: the crate version and the git commit.
fn wzp_version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("WZP_GIT_HASH"), ")")
}

/// Commands that only print what they find: a reader that stops
/// early (`| head`) ends them quietly, as it does any Unix tool, where
/// Rust's ignored SIGPIPE made the next `println!` panic.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default before any
    // other thread runs.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    let cli = Cli::parse();
    let filter = match log_filter::log_filter(cli.log.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Not `run`: it prints while its graph writes files, and a reader that
    // stops early (`| head`) must not cut the recording short.
    if matches!(
        cli.command,
        Command::Graph { .. }
            | Command::Stages { .. }
            | Command::Identity(_)
            | Command::Contacts(_)
            | Command::Devices
            | Command::History(_)
            | Command::ReplayAdapt(_)
    ) {
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Join(args) => cli::join::join_cmd(args),
        Command::Demo(args) => cli::demo::demo(args),
        Command::Graph {
            command: GraphCommand::Explain { graph, set },
        } => cli::graph::explain(&graph, &set),
        Command::Stages { kind } => cli::stages::stages(kind.as_deref()),
        Command::Call(args) => match cli::call::call_cmd(args) {
            Ok(0) => Ok(()),
            Ok(status) => std::process::exit(status),
            Err(e) => Err(e),
        },
        Command::Listen(args) => cli::listen::listen_cmd(args),
        Command::Message(args) => cli::message::message_cmd(args),
        Command::Messages(args) => cli::message::messages_cmd(args),
        Command::Contacts(args) => cli::contacts::contacts_cmd(args),
        Command::Devices => cli::devices::devices_cmd(),
        Command::History(args) => cli::history::history_cmd(args),
        Command::Reflect(args) => cli::reflect::reflect_cmd(args),
        Command::VersionCheck(args) => cli::reflect::version_cmd(args),
        Command::Identity(args) => cli::identity::identity_cmd(args),
        Command::ReplayAdapt(args) => match cli::replay::replay_cmd(args) {
            Ok(0) => Ok(()),
            Ok(status) => std::process::exit(status),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
