//! Reads the host name from a TLS ClientHello exactly as the client sent
//! it (before rustls normalises it), for [`super::canonical_sni`]. Pure and
//! bounded: it reads outside input (the fuzz target `client_hello_sni`
//! includes this file).

/// Most ClientHello bytes buffered to find the name; a longer hello is
/// passed to rustls unread (it judges it).
pub const MAX_HELLO: usize = 16 * 1024;

/// What a ClientHello's first bytes say about its server name.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloSni<'a> {
    /// More bytes are needed.
    Incomplete,
    /// Not a ClientHello we can read (rustls will judge it).
    Unreadable,
    /// A ClientHello without a host name.
    None,
    /// The host name exactly as sent.
    Name(&'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The raw host name of the TLS ClientHello at the start of `buf` (the
/// handshake bytes of the QUIC Initial CRYPTO stream).
pub fn client_hello_sni(buf: &[u8]) -> HelloSni<'_> {
    if buf.len() < 4 {
        return HelloSni::Incomplete;
    }
    if buf[0] != 1 {
        return HelloSni::Unreadable;
    }
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    let Some(body) = buf.get(4..4 + len) else {
        return if len > MAX_HELLO {
            HelloSni::Unreadable
        } else {
            HelloSni::Incomplete
        };
    };
    let mut r = Reader(body);
    let exts = (|| {
        r.take(2 + 32)?; // legacy_version, random
        r.vec8()?; // legacy_session_id
        r.vec16()?; // cipher_suites
        r.vec8()?; // legacy_compression_methods
        r.vec16()
    })();
    let Some(exts) = exts else {
        return HelloSni::Unreadable;
    };
    let mut r = Reader(exts);
    while !r.0.is_empty() {
        let (Some(typ), Some(data)) = (r.u16(), r.vec16()) else {
            return HelloSni::Unreadable;
        };
        if typ != 0 {
            continue;
        }
        // server_name: ServerNameList { name_type (1), HostName <1..2^16-1> }
        let mut l = Reader(data);
        let Some(list) = l.vec16() else {
            return HelloSni::Unreadable;
        };
        let mut l = Reader(list);
        return match (l.u8(), l.vec16()) {
            (Some(0), Some(name)) => HelloSni::Name(name),
            (Some(_), Some(_)) => HelloSni::None,
            _ => HelloSni::Unreadable,
        };
    }
    HelloSni::None
}

/// Whether `name` is in the one form rustls hands on unchanged: no
/// upper-case ASCII letter, no trailing dot.
pub fn is_canonical(name: &[u8]) -> bool {
    !name.ends_with(b".") && !name.iter().any(u8::is_ascii_uppercase)
}
