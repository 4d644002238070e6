//! Port-mapper (EPMD) requests and responses, and the port mapper's
//! registry, with no IO and no clock.
//!
//! Wire format (OTP's `erl_dist_protocol`, checked against `epmd_srv.c`):
//! every request is one frame `Length:16/big, Request:Length/bytes` sent on
//! a fresh TCP connection; responses are unframed and the daemon closes the
//! connection after answering, except after a successful `ALIVE2_REQ`, whose
//! connection stays open for as long as the node is registered.
//!
//! - [`decode_request`] / [`Request::encode`]: requests, with "need more
//!   bytes" (`Ok(None)`) kept apart from "bad bytes" (`Err`).
//! - [`Response`] encoders and the client-side decoders
//!   ([`decode_alive2_response`], [`decode_port2_response`], [`parse_names`]).
//! - [`registry::Registry`]: OTP's registration semantics (creation
//!   counters, duplicate names refused, NAMES and DUMP text).
//!
//! One request is erlkube's own, not OTP's: `WATCH_REQ` ('W', from a
//! local peer only). Its connection stays open; the daemon answers
//! `WATCH_RESP` ('W') and then writes the NAMES answer as a frame
//! (`Length:32/big`, the NAMES bytes) at once and after every change of
//! the registry, so a sidecar learns of a registration the moment it
//! happens instead of polling. OTP's epmd closes the connection on it
//! (an unknown request), which tells a client to poll instead.

pub mod registry;

use std::fmt;

/// `ALIVE2_REQ` ('x').
pub const ALIVE2_REQ: u8 = 120;
/// `ALIVE2_RESP` ('y'): 16-bit creation, for nodes whose highest version < 6.
pub const ALIVE2_RESP: u8 = 121;
/// `ALIVE2_X_RESP` ('v'): 32-bit creation, for highest version >= 6.
pub const ALIVE2_X_RESP: u8 = 118;
/// `PORT_PLEASE2_REQ` ('z').
pub const PORT_PLEASE2_REQ: u8 = 122;
/// `PORT2_RESP` ('w').
pub const PORT2_RESP: u8 = 119;
/// `NAMES_REQ` ('n').
pub const NAMES_REQ: u8 = 110;
/// `DUMP_REQ` ('d').
pub const DUMP_REQ: u8 = 100;
/// `KILL_REQ` ('k').
pub const KILL_REQ: u8 = 107;
/// `STOP_REQ` ('s').
pub const STOP_REQ: u8 = 115;
/// `WATCH_REQ` ('W'): erlkube's own; see the module documentation.
pub const WATCH_REQ: u8 = 87;
/// `WATCH_RESP` ('W'): the daemon watches for the client.
pub const WATCH_RESP: u8 = 87;
/// Largest NAMES frame a watching client accepts (about 40,000 names).
pub const MAX_WATCH_FRAME: usize = 2 << 20;

/// Node type of a normal (visible) Erlang node ('M').
pub const NODE_TYPE_NORMAL: u8 = 77;
/// Node type of a hidden node or C node ('H').
pub const NODE_TYPE_HIDDEN: u8 = 72;
/// The only protocol value in use: TCP/IPv4 (also used for IPv6).
pub const PROTOCOL_TCP: u8 = 0;
/// The default port of the port mapper.
pub const DEFAULT_PORT: u16 = 4369;

/// Longest node name in bytes (255 characters of up to 4 UTF-8 bytes).
pub const MAX_NAME_BYTES: usize = 255 * 4;
/// Longest node name in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest extra field in bytes.
pub const MAX_EXTRA_BYTES: usize = 255 * 4;
/// Largest request body OTP's epmd accepts (its input buffer is 3 060
/// bytes including the 2-byte length).
pub const MAX_REQUEST_LEN: usize = 3 * 255 * 4 - 3;

/// Why bytes could not be decoded. Small and `Copy`: the decoder is hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix says 0 bytes: there is no request type.
    #[error("empty request (length 0)")]
    EmptyRequest,
    /// The length prefix exceeds the cap.
    #[error("request of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// An unknown request type byte.
    #[error("unknown request type {0}")]
    UnknownRequest(u8),
    /// A request whose body is shorter than its fields say.
    #[error("truncated {0} request")]
    Truncated(&'static str),
    /// A node name that is empty, contains NUL, or is not UTF-8.
    #[error("invalid node name in {0} request")]
    InvalidName(&'static str),
    /// An unknown response type byte (client side).
    #[error("unexpected response type {0}")]
    UnexpectedResponse(u8),
    /// A NAMES response line that is not `name N at port P`.
    #[error("malformed NAMES response line")]
    MalformedNames,
}

/// A node's registration as sent in `ALIVE2_REQ` and returned by
/// `PORT2_RESP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's distribution listen port.
    pub port: u16,
    /// [`NODE_TYPE_NORMAL`] or [`NODE_TYPE_HIDDEN`].
    pub node_type: u8,
    /// [`PROTOCOL_TCP`].
    pub protocol: u8,
    /// Highest distribution version supported (6 since OTP 23).
    pub highest_version: u16,
    /// Lowest distribution version supported.
    pub lowest_version: u16,
    /// The name part before `@`.
    pub name: String,
    /// Opaque extra data, returned to PORT_PLEASE2 askers unchanged.
    pub extra: Vec<u8>,
}

impl NodeInfo {
    /// Appends the registration's fields as `ALIVE2_REQ` sends them after
    /// its tag and `PORT2_RESP` after its result byte: port, node type,
    /// protocol, highest and lowest version, name and extra (each with a
    /// 16-bit length).
    pub fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.node_type);
        out.push(self.protocol);
        out.extend_from_slice(&self.highest_version.to_be_bytes());
        out.extend_from_slice(&self.lowest_version.to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.extra.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.extra);
    }
}

/// A request to the port mapper.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Register a node (`ALIVE2_REQ`).
    Alive2(NodeInfo),
    /// Look up a node's port (`PORT_PLEASE2_REQ`).
    PortPlease2 { name: String },
    /// List registered names (`NAMES_REQ`).
    Names,
    /// Dump the registry (`DUMP_REQ`).
    Dump,
    /// Stop the daemon (`KILL_REQ`).
    Kill,
    /// Forcibly unregister a name (`STOP_REQ`).
    Stop { name: String },
    /// Follow the registry (`WATCH_REQ`, erlkube's own).
    Watch,
}

impl Request {
    /// The protocol's name for the request type (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Alive2(_) => "alive2",
            Request::PortPlease2 { .. } => "port_please2",
            Request::Names => "names",
            Request::Dump => "dump",
            Request::Kill => "kill",
            Request::Stop { .. } => "stop",
            Request::Watch => "watch",
        }
    }

    /// Appends the framed request (length prefix included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        match self {
            Request::Alive2(n) => {
                out.push(ALIVE2_REQ);
                n.encode_fields(out);
            }
            Request::PortPlease2 { name } => {
                out.push(PORT_PLEASE2_REQ);
                out.extend_from_slice(name.as_bytes());
            }
            Request::Names => out.push(NAMES_REQ),
            Request::Dump => out.push(DUMP_REQ),
            Request::Kill => out.push(KILL_REQ),
            Request::Stop { name } => {
                out.push(STOP_REQ);
                out.extend_from_slice(name.as_bytes());
            }
            Request::Watch => out.push(WATCH_REQ),
        }
        let len = (out.len() - start - 2) as u16;
        out[start..start + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// The framed request as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Decodes one framed request from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((request,
/// consumed)))` when a whole frame is there, and `Err` for bytes that can
/// never become a valid request (the connection should be closed). Bodies
/// longer than `max_len` are refused as soon as the length prefix arrives.
pub fn decode_request(buf: &[u8], max_len: usize) -> Result<Option<(Request, usize)>, DecodeError> {
    let Some(len) = frame_len(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < 2 + len {
        return Ok(None);
    }
    let body = &buf[2..2 + len];
    Ok(Some((decode_body(body)?, 2 + len)))
}

/// Checks the length prefix of a request frame: `Ok(None)` if fewer than two
/// bytes are there, else the body length, refused when 0 or over `max_len`.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if len == 0 {
        return Err(DecodeError::EmptyRequest);
    }
    if len > max_len {
        return Err(DecodeError::TooLarge { len, max: max_len });
    }
    Ok(Some(len))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A name field: optional trailing NUL removed (old clients send one); no
/// NUL inside; UTF-8; 1..=255 characters.
fn name_field(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() || bytes.len() > MAX_NAME_BYTES || bytes.contains(&0) {
        return Err(DecodeError::InvalidName(what));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidName(what))?;
    if s.chars().count() > MAX_NAME_CHARS {
        return Err(DecodeError::InvalidName(what));
    }
    Ok(s.to_owned())
}

/// Decodes a request body (the bytes after the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Request, DecodeError> {
    let Some((&tag, rest)) = body.split_first() else {
        return Err(DecodeError::EmptyRequest);
    };
    match tag {
        ALIVE2_REQ => {
            // Port 2, type 1, proto 1, high 2, low 2, nlen 2, name >= 1, elen 2.
            if rest.len() < 13 {
                return Err(DecodeError::Truncated("ALIVE2"));
            }
            let nlen = be16(rest, 8) as usize;
            if 12 + nlen > rest.len() {
                return Err(DecodeError::Truncated("ALIVE2"));
            }
            let elen = be16(rest, 10 + nlen) as usize;
            if 12 + nlen + elen > rest.len() {
                return Err(DecodeError::Truncated("ALIVE2"));
            }
            let name_bytes = &rest[10..10 + nlen];
            if name_bytes.is_empty() || name_bytes.contains(&0) {
                return Err(DecodeError::InvalidName("ALIVE2"));
            }
            // Length limits are the registry's to refuse (with a reply).
            let name = std::str::from_utf8(name_bytes)
                .map_err(|_| DecodeError::InvalidName("ALIVE2"))?
                .to_owned();
            Ok(Request::Alive2(NodeInfo {
                port: be16(rest, 0),
                node_type: rest[2],
                protocol: rest[3],
                highest_version: be16(rest, 4),
                lowest_version: be16(rest, 6),
                name,
                extra: rest[12 + nlen..12 + nlen + elen].to_vec(),
            }))
        }
        PORT_PLEASE2_REQ => Ok(Request::PortPlease2 {
            name: name_field(rest, "PORT_PLEASE2")?,
        }),
        NAMES_REQ => Ok(Request::Names),
        DUMP_REQ => Ok(Request::Dump),
        KILL_REQ => Ok(Request::Kill),
        STOP_REQ => Ok(Request::Stop {
            name: name_field(rest, "STOP")?,
        }),
        WATCH_REQ => Ok(Request::Watch),
        other => Err(DecodeError::UnknownRequest(other)),
    }
}

/// A response from the port mapper. Responses are not length-framed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `ALIVE2_X_RESP`: result 0 = registered, with a 32-bit creation.
    Alive2X { result: u8, creation: u32 },
    /// `ALIVE2_RESP`: the old 16-bit form for highest version < 6.
    Alive2 { result: u8, creation: u16 },
    /// `PORT2_RESP` for a registered name.
    Port2Found(NodeInfo),
    /// `PORT2_RESP` with a non-zero result: no such name.
    Port2NotFound,
    /// NAMES or DUMP: the daemon's port, then text lines.
    Text { epmd_port: u32, text: String },
    /// KILL: `OK` (killed) or `NO` (refused: nodes registered).
    Kill { killed: bool },
    /// STOP: `STOPPED` or `NOEXIST`.
    Stop { stopped: bool },
}

impl Response {
    /// Appends the response's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Alive2X { result, creation } => {
                out.push(ALIVE2_X_RESP);
                out.push(*result);
                out.extend_from_slice(&creation.to_be_bytes());
            }
            Response::Alive2 { result, creation } => {
                out.push(ALIVE2_RESP);
                out.push(*result);
                out.extend_from_slice(&creation.to_be_bytes());
            }
            Response::Port2Found(n) => {
                out.push(PORT2_RESP);
                out.push(0);
                n.encode_fields(out);
            }
            Response::Port2NotFound => out.extend_from_slice(&[PORT2_RESP, 1]),
            Response::Text { epmd_port, text } => {
                out.extend_from_slice(&epmd_port.to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Response::Kill { killed } => out.extend_from_slice(if *killed { b"OK" } else { b"NO" }),
            Response::Stop { stopped } => {
                out.extend_from_slice(if *stopped { b"STOPPED" } else { b"NOEXIST" })
            }
        }
    }

    /// The response as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// The answer to an `ALIVE2_REQ`, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive2Reply {
    /// 0 = registered; anything else = refused.
    pub result: u8,
    /// The node's creation (16-bit values widened for the old form).
    pub creation: u32,
}

/// Client side: decodes `ALIVE2_X_RESP` or `ALIVE2_RESP` from the start of
/// `buf` (`Ok(None)`: need more bytes).
pub fn decode_alive2_response(buf: &[u8]) -> Result<Option<(Alive2Reply, usize)>, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    match tag {
        ALIVE2_X_RESP if buf.len() >= 6 => Ok(Some((
            Alive2Reply {
                result: buf[1],
                creation: u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]),
            },
            6,
        ))),
        ALIVE2_RESP if buf.len() >= 4 => Ok(Some((
            Alive2Reply {
                result: buf[1],
                creation: be16(buf, 2) as u32,
            },
            4,
        ))),
        ALIVE2_X_RESP | ALIVE2_RESP => Ok(None),
        other => Err(DecodeError::UnexpectedResponse(other)),
    }
}

/// Client side: decodes a `PORT2_RESP` from the start of `buf`
/// (`Ok(None)`: need more bytes; `Some(None)`: name not registered).
#[allow(clippy::type_complexity)]
pub fn decode_port2_response(buf: &[u8]) -> Result<Option<(Option<NodeInfo>, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[0] != PORT2_RESP {
        return Err(DecodeError::UnexpectedResponse(buf[0]));
    }
    if buf[1] != 0 {
        return Ok(Some((None, 2)));
    }
    if buf.len() < 12 {
        return Ok(None);
    }
    let nlen = be16(buf, 10) as usize;
    if buf.len() < 14 + nlen {
        return Ok(None);
    }
    let elen = be16(buf, 12 + nlen) as usize;
    let end = 14 + nlen + elen;
    if buf.len() < end {
        return Ok(None);
    }
    let name = std::str::from_utf8(&buf[12..12 + nlen])
        .map_err(|_| DecodeError::InvalidName("PORT2_RESP"))?
        .to_owned();
    Ok(Some((
        Some(NodeInfo {
            port: be16(buf, 2),
            node_type: buf[4],
            protocol: buf[5],
            highest_version: be16(buf, 6),
            lowest_version: be16(buf, 8),
            name,
            extra: buf[14 + nlen..end].to_vec(),
        }),
        end,
    )))
}

/// One line of a NAMES response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The node name (before `@`).
    pub name: String,
    /// Its distribution port.
    pub port: u16,
}

impl fmt::Display for NameEntry {
    /// OTP's line format, `name N at port P` (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name {} at port {}", self.name, self.port)
    }
}

/// Daemon side: the frame a watching client gets for a NAMES answer
/// (`Length:32/big` and the answer's bytes).
pub fn encode_watch_frame(names: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    out.extend_from_slice(names);
}

/// Client side: one watch frame from the start of `buf`: `Ok(None)` when
/// more bytes are needed, else the NAMES bytes and the bytes consumed.
/// A frame over [`MAX_WATCH_FRAME`] is refused.
pub fn decode_watch_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_WATCH_FRAME {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_WATCH_FRAME,
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + len], 4 + len)))
}

/// Client side: parses a complete NAMES response (read until the daemon
/// closed the connection) into the daemon's port and the entries.
pub fn parse_names(buf: &[u8]) -> Result<(u32, Vec<NameEntry>), DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated("NAMES response"));
    }
    let port = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let text = std::str::from_utf8(&buf[4..]).map_err(|_| DecodeError::MalformedNames)?;
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let rest = line
            .strip_prefix("name ")
            .ok_or(DecodeError::MalformedNames)?;
        let (name, port) = rest
            .rsplit_once(" at port ")
            .ok_or(DecodeError::MalformedNames)?;
        let port = port.parse().map_err(|_| DecodeError::MalformedNames)?;
        entries.push(NameEntry {
            name: name.to_owned(),
            port,
        });
    }
    Ok((port, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            port: 40001,
            node_type: NODE_TYPE_NORMAL,
            protocol: PROTOCOL_TCP,
            highest_version: 6,
            lowest_version: 5,
            name: name.into(),
            extra: vec![],
        }
    }

    /// Bytes OTP 25's `erl_epmd` sends for `-name foo@127.0.0.1` on
    /// distribution port 40001 (captured with a listening socket).
    const ALIVE2_FOO: &[u8] = &[
        0, 16, 120, 0x9c, 0x41, 77, 0, 0, 6, 0, 5, 0, 3, b'f', b'o', b'o', 0, 0,
    ];

    #[test]
    fn alive2_golden_both_directions() {
        let req = Request::Alive2(node("foo"));
        assert_eq!(req.to_bytes(), ALIVE2_FOO);
        assert_eq!(
            decode_request(ALIVE2_FOO, MAX_REQUEST_LEN).unwrap(),
            Some((req, ALIVE2_FOO.len()))
        );
    }

    #[test]
    fn every_request_round_trips() {
        let mut with_extra = node("bär");
        with_extra.extra = vec![1, 2, 3];
        for req in [
            Request::Alive2(with_extra),
            Request::PortPlease2 { name: "foo".into() },
            Request::Names,
            Request::Dump,
            Request::Kill,
            Request::Stop { name: "foo".into() },
        ] {
            let bytes = req.to_bytes();
            assert_eq!(
                decode_request(&bytes, MAX_REQUEST_LEN).unwrap(),
                Some((req.clone(), bytes.len()))
            );
            // Every strict prefix needs more bytes.
            for cut in 0..bytes.len() {
                assert_eq!(decode_request(&bytes[..cut], MAX_REQUEST_LEN), Ok(None));
            }
        }
    }

    #[test]
    fn need_more_versus_bad_bytes() {
        assert_eq!(decode_request(&[0], 100), Ok(None));
        assert_eq!(decode_request(&[0, 0], 100), Err(DecodeError::EmptyRequest));
        assert_eq!(
            decode_request(&[0x10, 0], 100),
            Err(DecodeError::TooLarge {
                len: 4096,
                max: 100
            })
        );
        assert_eq!(
            decode_request(&[0, 1, b'?'], 100),
            Err(DecodeError::UnknownRequest(b'?'))
        );
        // ALIVE2 whose name length runs past the frame.
        assert_eq!(
            decode_request(
                &[0, 14, 120, 0, 1, 77, 0, 0, 6, 0, 5, 0, 9, b'a', 0, 0],
                100
            ),
            Err(DecodeError::Truncated("ALIVE2"))
        );
        assert_eq!(
            decode_request(&[0, 1, PORT_PLEASE2_REQ], 100),
            Err(DecodeError::InvalidName("PORT_PLEASE2"))
        );
        assert_eq!(
            decode_request(&[0, 3, PORT_PLEASE2_REQ, b'a', 0xff], 100),
            Err(DecodeError::InvalidName("PORT_PLEASE2"))
        );
    }

    #[test]
    fn port_please_accepts_trailing_nul() {
        assert_eq!(
            decode_body(b"zfoo\0").unwrap(),
            Request::PortPlease2 { name: "foo".into() }
        );
    }

    #[test]
    fn responses_golden() {
        assert_eq!(
            Response::Alive2X {
                result: 0,
                creation: 0x01020304
            }
            .to_bytes(),
            [118, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            Response::Alive2 {
                result: 1,
                creation: 99
            }
            .to_bytes(),
            [121, 1, 0, 99]
        );
        assert_eq!(Response::Port2NotFound.to_bytes(), [119, 1]);
        assert_eq!(Response::Kill { killed: false }.to_bytes(), b"NO");
        assert_eq!(Response::Stop { stopped: true }.to_bytes(), b"STOPPED");
        let found = Response::Port2Found(node("foo")).to_bytes();
        assert_eq!(
            found,
            [119, 0, 0x9c, 0x41, 77, 0, 0, 6, 0, 5, 0, 3, b'f', b'o', b'o', 0, 0]
        );
        assert_eq!(
            decode_port2_response(&found).unwrap(),
            Some((Some(node("foo")), found.len()))
        );
        assert_eq!(decode_port2_response(&found[..5]).unwrap(), None);
        assert_eq!(decode_port2_response(&[119, 1]).unwrap(), Some((None, 2)));
        assert_eq!(
            decode_alive2_response(&[118, 0, 0, 0, 0, 7]).unwrap(),
            Some((
                Alive2Reply {
                    result: 0,
                    creation: 7
                },
                6
            ))
        );
        assert_eq!(decode_alive2_response(&[118, 0, 0]).unwrap(), None);
    }

    #[test]
    fn names_text_parses() {
        let mut buf = 4369u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"name foo at port 40001\nname b at port 1\n");
        let (port, entries) = parse_names(&buf).unwrap();
        assert_eq!(port, 4369);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].to_string(), "name foo at port 40001");
        assert_eq!(
            parse_names(&[0, 0, 0, 1, b'x', b'\n']),
            Err(DecodeError::MalformedNames)
        );
    }

    /// Random and mutated inputs: the decoders never panic, and whatever
    /// decodes re-encodes to bytes that decode to the same request.
    #[test]
    fn random_bytes_never_panic_and_round_trip() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = vec![
            ALIVE2_FOO.to_vec(),
            Request::PortPlease2 { name: "abc".into() }.to_bytes(),
            Request::Stop { name: "n".into() }.to_bytes(),
            Request::Names.to_bytes(),
        ];
        for i in 0..200_000 {
            let mut buf = if i % 2 == 0 {
                let len = (next() % 40) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let mut b = seeds[(next() % seeds.len() as u64) as usize].clone();
                let pos = (next() as usize) % b.len();
                b[pos] = next() as u8;
                b
            };
            if i % 7 == 0 {
                buf.truncate((next() as usize) % (buf.len() + 1));
            }
            if let Ok(Some((req, used))) = decode_request(&buf, MAX_REQUEST_LEN) {
                let again = req.to_bytes();
                assert_eq!(
                    decode_request(&again, MAX_REQUEST_LEN).unwrap(),
                    Some((req, again.len()))
                );
                assert!(used <= buf.len());
            }
            let _ = decode_port2_response(&buf);
            let _ = decode_alive2_response(&buf);
            let _ = parse_names(&buf);
        }
    }

    #[test]
    fn watch_request_and_frames_round_trip() {
        let bytes = Request::Watch.to_bytes();
        assert_eq!(bytes, [0, 1, WATCH_REQ]);
        assert_eq!(
            decode_request(&bytes, MAX_REQUEST_LEN).unwrap(),
            Some((Request::Watch, 3))
        );
        let names = b"\0\0\x11\x11name a at port 10\n";
        let mut out = Vec::new();
        encode_watch_frame(names, &mut out);
        encode_watch_frame(b"", &mut out);
        let (first, used) = decode_watch_frame(&out).unwrap().unwrap();
        assert_eq!(first, names);
        assert_eq!(parse_names(first).unwrap().1[0].name, "a");
        assert_eq!(
            decode_watch_frame(&out[used..]).unwrap(),
            Some((&b""[..], 4))
        );
        // Partial frames wait for more bytes; an oversized one is refused.
        assert_eq!(decode_watch_frame(&out[..3]).unwrap(), None);
        assert_eq!(decode_watch_frame(&out[..used - 1]).unwrap(), None);
        let huge = ((MAX_WATCH_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_watch_frame(&huge),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
