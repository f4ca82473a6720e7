//! Reads the server name (SNI) from the first bytes of a CONNECT tunnel, when they are a TLS
//! ClientHello. Bounded and panic-free: it only looks, never decrypts or alters.

/// The most bytes read while waiting for a whole ClientHello.
pub(crate) const MAX_HELLO_BYTES: usize = 32 * 1024;

/// What the first bytes of a tunnel are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Not enough bytes yet.
    NeedMore,
    /// Not a TLS handshake record: another protocol.
    NotTls,
    /// A TLS handshake record that is not a well-formed ClientHello.
    Malformed,
    /// A ClientHello, with its `host_name` SNI if it has one.
    Hello(Option<String>),
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// A byte cursor that fails instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Looks at the bytes a tunnel's client sent so far.
pub(crate) fn peek(bytes: &[u8]) -> Peek {
    match bytes.first() {
        None => return Peek::NeedMore,
        Some(&HANDSHAKE) => {}
        Some(_) => return Peek::NotTls,
    }
    // The handshake message may span several records: gather their fragments.
    let mut records = Cursor { bytes };
    let mut message = Vec::new();
    loop {
        let Some(header) = records.take(5) else {
            return Peek::NeedMore;
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Peek::Malformed;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > (1 << 14) + 2048 {
            return Peek::Malformed;
        }
        let Some(fragment) = records.take(len) else {
            return if bytes.len() >= MAX_HELLO_BYTES {
                Peek::Malformed
            } else {
                Peek::NeedMore
            };
        };
        message.extend_from_slice(fragment);
        if message.len() >= 4 {
            let declared = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            if message[0] != CLIENT_HELLO || declared + 4 > MAX_HELLO_BYTES {
                return Peek::Malformed;
            }
            if message.len() >= declared + 4 {
                return parse_hello(&message);
            }
        }
        if bytes.len() >= MAX_HELLO_BYTES {
            return Peek::Malformed;
        }
    }
}

fn parse_hello(message: &[u8]) -> Peek {
    parse_hello_inner(message).unwrap_or(Peek::Malformed)
}

fn parse_hello_inner(message: &[u8]) -> Option<Peek> {
    let mut c = Cursor { bytes: message };
    c.u8()?; // msg_type
    let len = c.u24()?;
    let mut body = Cursor {
        bytes: c.take(len)?,
    };
    body.take(2)?; // legacy_version
    body.take(32)?; // random
    let session_id = body.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = body.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if body.vec8()?.is_empty() {
        return None; // compression methods: at least `null`
    }
    if body.bytes.is_empty() {
        return Some(Peek::Hello(None)); // no extensions at all
    }
    let mut extensions = Cursor {
        bytes: body.vec16()?,
    };
    if !body.bytes.is_empty() {
        return None;
    }
    let mut sni = None;
    let mut seen = Vec::new();
    while !extensions.bytes.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if seen.contains(&kind) {
            return None; // duplicate extensions are forbidden
        }
        seen.push(kind);
        if kind == EXT_SERVER_NAME {
            sni = Some(parse_server_name(data)?);
        }
    }
    Some(Peek::Hello(sni))
}

fn parse_server_name(data: &[u8]) -> Option<String> {
    let mut outer = Cursor { bytes: data };
    let mut list = Cursor {
        bytes: outer.vec16()?,
    };
    if !outer.bytes.is_empty() {
        return None;
    }
    let mut name = None;
    while !list.bytes.is_empty() {
        let kind = list.u8()?;
        let value = list.vec16()?;
        if kind == HOST_NAME {
            if name.is_some() {
                return None; // at most one host_name (RFC 6066)
            }
            name = Some(String::from_utf8(value.to_vec()).ok()?);
        }
    }
    name
}

/// A TLS alert record (fatal, `access_denied`), sent before closing a refused tunnel.
pub(crate) const ACCESS_DENIED_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn u16be(n: usize) -> [u8; 2] {
        u16::try_from(n).unwrap().to_be_bytes()
    }

    /// A ClientHello message (without record framing) with the given extensions.
    pub(crate) fn hello_message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend(u16be(data.len()));
            ext.extend(data);
        }
        body.extend(u16be(ext.len()));
        body.extend(ext);
        let mut msg = vec![CLIENT_HELLO];
        let n = body.len();
        msg.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        msg.extend(body);
        msg
    }

    pub(crate) fn sni_ext(names: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(HOST_NAME);
            list.extend(u16be(n.len()));
            list.extend(n.as_bytes());
        }
        let mut data = u16be(list.len()).to_vec();
        data.extend(list);
        (EXT_SERVER_NAME, data)
    }

    fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in message.chunks(chunk) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend(u16be(part.len()));
            out.extend(part);
        }
        out
    }

    #[test]
    fn reads_sni() {
        let bytes = records(
            &hello_message(&[(10, vec![0, 2, 0, 29]), sni_ext(&["a.test"])]),
            1 << 14,
        );
        assert_eq!(peek(&bytes), Peek::Hello(Some("a.test".into())));
        for cut in 0..bytes.len() {
            assert_eq!(peek(&bytes[..cut]), Peek::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn reads_sni_across_records() {
        let bytes = records(&hello_message(&[sni_ext(&["split.test"])]), 7);
        assert_eq!(peek(&bytes), Peek::Hello(Some("split.test".into())));
    }

    #[test]
    fn no_sni_and_no_extensions() {
        let bytes = records(&hello_message(&[(10, vec![0, 2, 0, 29])]), 1 << 14);
        assert_eq!(peek(&bytes), Peek::Hello(None));
        let mut bare = hello_message(&[]);
        bare.truncate(bare.len() - 2); // drop the empty extensions block
        let n = bare.len() - 4;
        bare[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        assert_eq!(peek(&records(&bare, 1 << 14)), Peek::Hello(None));
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
        assert_eq!(peek(b"SSH-2.0-x"), Peek::NotTls);
        assert_eq!(peek(&[]), Peek::NeedMore);
    }

    #[test]
    fn malformed_hellos() {
        // Two host names.
        let two = records(&hello_message(&[sni_ext(&["a.test", "b.test"])]), 1 << 14);
        assert_eq!(peek(&two), Peek::Malformed);
        // Duplicate SNI extension.
        let dup = records(
            &hello_message(&[sni_ext(&["a.test"]), sni_ext(&["a.test"])]),
            1 << 14,
        );
        assert_eq!(peek(&dup), Peek::Malformed);
        // A handshake record that is not a ClientHello.
        let mut server_hello = hello_message(&[]);
        server_hello[0] = 2;
        assert_eq!(peek(&records(&server_hello, 1 << 14)), Peek::Malformed);
        // A record of another type after the first.
        let mut mixed = records(&hello_message(&[sni_ext(&["a.test"])]), 10);
        mixed[15] = 23;
        assert_eq!(peek(&mixed), Peek::Malformed);
        // Zero-length record, bad version.
        assert_eq!(peek(&[22, 3, 1, 0, 0]), Peek::Malformed);
        assert_eq!(peek(&[22, 2, 0, 0, 5, 1]), Peek::Malformed);
        // Lengths that overrun the message.
        let mut overrun = hello_message(&[sni_ext(&["a.test"])]);
        let last = overrun.len() - 1;
        overrun[last - 8] = 0xff;
        let _ = peek(&records(&overrun, 1 << 14)); // never panics
    }

    #[test]
    fn garbage_never_panics() {
        let hello = records(&hello_message(&[sni_ext(&["a.test"])]), 1 << 14);
        let mut state = 0x1234_5678u32;
        for i in 0..2000 {
            let mut bytes = hello.clone();
            for _ in 0..(i % 7 + 1) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % bytes.len();
                bytes[at] = (state >> 8) as u8;
            }
            let cut = state as usize % (bytes.len() + 1);
            let _ = peek(&bytes[..cut]);
            let _ = peek(&bytes);
        }
    }

    #[test]
    fn oversized_hello_is_malformed() {
        let big = records(&hello_message(&[(0xfe, vec![0; 40_000])]), 1 << 14);
        assert_eq!(peek(&big), Peek::Malformed);
    }
}
