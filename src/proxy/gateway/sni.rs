//! The server name (SNI) of a TLS ClientHello, read from the bytes a client sent first,
//! without terminating TLS: what Envoy's `tls_inspector` listener filter does for
//! `PASSTHROUGH` servers.
//!
//! [`parse_client_hello`] takes whatever prefix of the connection has arrived and says
//! whether it needs more, found a ClientHello (with or without a `server_name` extension), or
//! is not TLS. The ClientHello may be split over several TLS records; the handshake message
//! is reassembled from consecutive handshake records (at most [`MAX_CLIENT_HELLO`] bytes).
//! Junk never panics: every length is checked against what is there.

/// The most bytes read while looking for the ClientHello (Envoy's `tls_inspector` reads up
/// to 64 KiB; real ClientHellos are well under 16 KiB).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST: u8 = 0x00;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// The ClientHello is not complete yet: read more.
    Incomplete,
    /// A complete ClientHello, with its `server_name` (lower-cased) if it has one.
    Complete {
        /// The host name of the `server_name` extension.
        sni: Option<String>,
    },
    /// Not a TLS ClientHello (or a malformed one).
    NotTls,
}

/// Reads the ClientHello at the start of `buf` (see the [module docs](self)).
pub fn parse_client_hello(buf: &[u8]) -> ClientHello {
    // Reassemble the handshake message from the records' payloads.
    let mut message: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        let Some(&[kind, major, _minor, hi, lo]) = rest.get(..5) else {
            return incomplete_or_junk(rest);
        };
        if kind != RECORD_HANDSHAKE || major != 3 {
            return ClientHello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > 16384 + 2048 {
            return ClientHello::NotTls;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return ClientHello::Incomplete;
        };
        message.extend_from_slice(payload);
        rest = rest.get(5 + len..).unwrap_or_default();
        if message.len() > MAX_CLIENT_HELLO {
            return ClientHello::NotTls;
        }
        let mut r = Reader(&message);
        let (Some(t), Some(body_len)) = (r.u8(), r.u24()) else {
            continue; // fewer than 4 bytes of handshake header so far
        };
        if t != HANDSHAKE_CLIENT_HELLO {
            return ClientHello::NotTls;
        }
        if body_len > MAX_CLIENT_HELLO {
            return ClientHello::NotTls;
        }
        let Some(body) = r.take(body_len) else {
            continue; // the message continues in the next record
        };
        return match server_name(body) {
            Some(sni) => ClientHello::Complete { sni },
            None => ClientHello::NotTls,
        };
    }
}

/// A record header cut short: incomplete if what is there could start a handshake record.
fn incomplete_or_junk(rest: &[u8]) -> ClientHello {
    match rest {
        [] => ClientHello::Incomplete,
        [kind, ..] if *kind != RECORD_HANDSHAKE => ClientHello::NotTls,
        [_, major, ..] if *major != 3 => ClientHello::NotTls,
        _ => ClientHello::Incomplete,
    }
}

/// The `server_name` of a ClientHello body: `Some(None)` when it has none, `None` when the
/// body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    if r.0.is_empty() {
        return Some(None); // no extensions at all
    }
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader(data);
        let list_len = usize::from(list.u16()?);
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == NAME_TYPE_HOST {
                let name = std::str::from_utf8(name).ok()?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return None;
                }
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// A checked cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(
            (usize::from(*b.first()?) << 16)
                | (usize::from(*b.get(1)?) << 8)
                | usize::from(*b.get(2)?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body with `sni` (none when `None`) and one other extension before it.
    fn hello_body(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(4);
        body.extend([1, 2, 3, 4]); // session id
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // cipher suites
        body.extend([1, 0]); // compression: null
        let mut exts = vec![0x00, 0x2b, 0, 3, 2, 3, 4]; // supported_versions
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend([0, 0]);
            exts.extend((n + 5).to_be_bytes());
            exts.extend((n + 3).to_be_bytes());
            exts.push(0);
            exts.extend(n.to_be_bytes());
            exts.extend(name.as_bytes());
        }
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        body
    }

    fn handshake(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend([RECORD_HANDSHAKE, 3, 1]);
            out.extend((part.len() as u16).to_be_bytes());
            out.extend(part);
        }
        out
    }

    #[test]
    fn reads_the_server_name_of_a_client_hello() {
        let bytes = records(&handshake(&hello_body(Some("API.Example.com"))), 16384);
        assert_eq!(
            parse_client_hello(&bytes),
            ClientHello::Complete {
                sni: Some("api.example.com".into())
            }
        );
    }

    #[test]
    fn a_client_hello_without_server_name_is_complete_without_sni() {
        let bytes = records(&handshake(&hello_body(None)), 16384);
        assert_eq!(
            parse_client_hello(&bytes),
            ClientHello::Complete { sni: None }
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_records_are_reassembled() {
        let msg = handshake(&hello_body(Some("a.example.com")));
        for chunk in [msg.len(), 10, 3, 1] {
            let bytes = records(&msg, chunk);
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_client_hello(&bytes[..cut]),
                    ClientHello::Incomplete,
                    "chunk {chunk}, cut {cut}"
                );
            }
            assert!(matches!(
                parse_client_hello(&bytes),
                ClientHello::Complete { sni: Some(_) }
            ));
        }
    }

    #[test]
    fn junk_is_not_tls_and_never_panics() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            ClientHello::NotTls
        );
        assert_eq!(parse_client_hello(&[0x16, 9]), ClientHello::NotTls);
        assert_eq!(parse_client_hello(&[0x16, 3, 1, 0, 0]), ClientHello::NotTls);
        // A ServerHello (type 2) is not a ClientHello.
        let mut not_hello = handshake(&hello_body(None));
        not_hello[0] = 2;
        assert_eq!(
            parse_client_hello(&records(&not_hello, 16384)),
            ClientHello::NotTls
        );
        // Lengths that point past the end, at every position.
        let good = handshake(&hello_body(Some("a.example.com")));
        for i in 4..good.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse_client_hello(&records(&bad, 16384));
            }
        }
        // Pseudo-random junk behind a valid record header.
        let mut x: u32 = 12345;
        for len in 0..300usize {
            let mut junk = vec![RECORD_HANDSHAKE, 3, 1];
            junk.extend((len as u16).to_be_bytes());
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                junk.push((x >> 16) as u8);
            }
            let _ = parse_client_hello(&junk);
        }
    }
}
