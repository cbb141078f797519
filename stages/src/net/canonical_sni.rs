//! Only canonical server names get through the relay's handshake.
//!
//! rustls lower-cases the server name and drops a trailing dot before
//! anything above it sees the name, so `ABCD…` and `abcd….` would reach the
//! room `abcd…`. wzp names are canonical lower-case (room ids are 32
//! lower-case hex digits, docs/WIRE.md §4): [`CanonicalSni`] wraps the QUIC
//! server crypto config, reads the raw name from the ClientHello before
//! rustls does ([`client_hello_sni`]), and fails the handshake of a name
//! with an upper-case letter or a trailing dot with a transport error whose
//! reason starts with [`NON_CANONICAL_SNI`] (the relay counts and logs it).

use std::any::Any;
use std::sync::Arc;

use quinn::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, UnsupportedVersion};
use quinn::{ConnectionId, Side, TransportErrorCode};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;

/// Start of the close reason of a refused non-canonical server name.
pub const NON_CANONICAL_SNI: &str = "non-canonical server name";

pub use super::client_hello::{client_hello_sni, is_canonical, HelloSni, MAX_HELLO};

/// The QUIC server crypto config with the canonical-name check in front.
pub struct CanonicalSni {
    inner: Arc<dyn crypto::ServerConfig>,
}

impl CanonicalSni {
    pub fn new(inner: Arc<dyn crypto::ServerConfig>) -> CanonicalSni {
        CanonicalSni { inner }
    }
}

impl crypto::ServerConfig for CanonicalSni {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.inner.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.inner.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(CheckedSession {
            inner: self.inner.clone().start_session(version, params),
            hello: Some(Vec::new()),
        })
    }
}

struct CheckedSession {
    inner: Box<dyn crypto::Session>,
    /// The ClientHello bytes so far; `None` once judged.
    hello: Option<Vec<u8>>,
}

impl CheckedSession {
    fn check(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        let Some(hello) = self.hello.as_mut() else {
            return Ok(());
        };
        let verdict = if hello.is_empty() {
            judge(buf)
        } else {
            hello.extend_from_slice(buf);
            judge(hello)
        };
        match verdict {
            Verdict::Wait => {
                if hello.is_empty() {
                    hello.extend_from_slice(buf);
                }
                if hello.len() > MAX_HELLO {
                    self.hello = None;
                }
                Ok(())
            }
            Verdict::Pass => {
                self.hello = None;
                Ok(())
            }
            Verdict::Refuse(reason) => {
                self.hello = None;
                Err(TransportError {
                    code: TransportErrorCode::PROTOCOL_VIOLATION,
                    frame: None,
                    reason,
                })
            }
        }
    }
}

enum Verdict {
    Wait,
    Pass,
    Refuse(String),
}

fn judge(buf: &[u8]) -> Verdict {
    match client_hello_sni(buf) {
        HelloSni::Incomplete => Verdict::Wait,
        HelloSni::Unreadable | HelloSni::None => Verdict::Pass,
        HelloSni::Name(name) if is_canonical(name) => Verdict::Pass,
        HelloSni::Name(name) => {
            let shown: String = String::from_utf8_lossy(&name[..name.len().min(80)]).into();
            Verdict::Refuse(format!(
                "{NON_CANONICAL_SNI} {shown:?}: use lower case without a trailing dot \
                 (a room id is 32 lower-case hex digits)"
            ))
        }
    }
}

impl crypto::Session for CheckedSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }
    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.inner.handshake_data()
    }
    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }
    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        self.inner.early_crypto()
    }
    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }
    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }
    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        self.check(buf)?;
        self.inner.read_handshake(buf)
    }
    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }
    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.inner.write_handshake(buf)
    }
    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn crypto::PacketKey>>> {
        self.inner.next_1rtt_keys()
    }
    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }
    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body around `exts`.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        let mut m = vec![1];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&body);
        m
    }

    fn sni_ext(name_type: u8, name: &[u8]) -> Vec<u8> {
        let mut list = vec![name_type];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut e = vec![0, 0];
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(&data);
        e
    }

    #[test]
    fn client_hello_sni_table() {
        let alpn = [0u8, 16, 0, 3, 0, 1, b'x'];
        let name = b"0123456789abcdef0123456789abcdef";
        let with_name = hello(&[&alpn[..], &sni_ext(0, name)].concat());
        let cases: Vec<(&str, Vec<u8>, HelloSni<'_>)> = vec![
            ("empty", vec![], HelloSni::Incomplete),
            ("not a ClientHello", vec![2, 0, 0, 0], HelloSni::Unreadable),
            ("cut", with_name[..20].to_vec(), HelloSni::Incomplete),
            (
                "name after another ext",
                with_name.clone(),
                HelloSni::Name(name),
            ),
            ("no extensions", hello(&[]), HelloSni::None),
            ("other name type", hello(&sni_ext(1, b"x")), HelloSni::None),
            (
                "extension longer than its list",
                hello(&[0, 0, 0, 9, 0]),
                HelloSni::Unreadable,
            ),
            (
                "huge declared length",
                vec![1, 0xff, 0xff, 0xff, 3, 3],
                HelloSni::Unreadable,
            ),
            (
                "body too short",
                vec![1, 0, 0, 3, 3, 3, 0],
                HelloSni::Unreadable,
            ),
        ];
        for (what, bytes, want) in cases {
            let got = client_hello_sni(&bytes);
            let want = match want {
                HelloSni::Name(_) => HelloSni::Name(name),
                w => w,
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn only_lower_case_without_a_trailing_dot_is_canonical() {
        assert!(is_canonical(b"0123456789abcdef0123456789abcdef"));
        assert!(is_canonical(b"call-abc"));
        assert!(is_canonical(b"_signal"));
        assert!(!is_canonical(b"0123456789ABCDEF0123456789abcdef"));
        assert!(!is_canonical(b"0123456789abcdef0123456789abcdef."));
        assert!(!is_canonical(b"Ping"));
    }

    #[test]
    fn a_hello_split_over_reads_is_judged_whole() {
        let h = hello(&sni_ext(0, b"0123456789ABCDEF0123456789abcdef"));
        assert!(matches!(judge(&h[..10]), Verdict::Wait));
        match judge(&h) {
            Verdict::Refuse(r) => assert!(r.starts_with(NON_CANONICAL_SNI), "{r}"),
            _ => panic!("an upper-case room id passes"),
        }
        let ok = hello(&sni_ext(0, b"0123456789abcdef0123456789abcdef"));
        assert!(matches!(judge(&ok), Verdict::Pass));
    }
}
