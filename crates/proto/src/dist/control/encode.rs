//! Outbound control messages: the term bodies written beside the decoder
//! in [`super`], so that one module owns both directions. SEND and
//! REG_SEND, the bulk of the traffic, are written straight from their
//! fields (with atom cache references when the connection uses them);
//! every other operation through its control tuple. The bytes are the
//! same as encoding [`ControlMessage::to_term`].

use erlkube_etf::tags::{NEW_PID_EXT, SMALL_ATOM_UTF8_EXT, SMALL_INTEGER_EXT, SMALL_TUPLE_EXT};
use erlkube_etf::{Atom, EncodeOptions, Pid, Term};

use super::{ControlMessage, DistMessage};
use crate::dist::frame::{OutboundEncoder, ATOM_CACHE_REF};

/// The atom '' (the unused field of SEND and REG_SEND), allocated once.
fn empty_atom() -> &'static Atom {
    static EMPTY: std::sync::OnceLock<Atom> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Atom::new(""))
}

impl ControlMessage {
    /// Writes the control message's term body (no version byte): the
    /// same bytes as encoding [`ControlMessage::to_term`], SEND and
    /// REG_SEND without building the tuple.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let opts = EncodeOptions::utf8_atoms();
        let pid = |p: &Pid, out: &mut Vec<u8>| {
            erlkube_etf::encode_body_into(&Term::Pid(p.clone()), &opts, out)
        };
        match self {
            ControlMessage::Send { to } => {
                out.extend_from_slice(&[
                    SMALL_TUPLE_EXT,
                    3,
                    SMALL_INTEGER_EXT,
                    self.op(),
                    SMALL_ATOM_UTF8_EXT,
                    0,
                ]);
                pid(to, out);
            }
            ControlMessage::RegSend { from, to_name } => {
                out.extend_from_slice(&[SMALL_TUPLE_EXT, 4, SMALL_INTEGER_EXT, self.op()]);
                pid(from, out);
                out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, 0]);
                let name = to_name.as_str().as_bytes();
                if name.len() < 256 {
                    out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, name.len() as u8]);
                    out.extend_from_slice(name);
                } else {
                    erlkube_etf::encode_body_into(&Term::Atom(to_name.clone()), &opts, out);
                }
            }
            other => erlkube_etf::encode_body_into(&other.to_term(), &opts, out),
        }
    }

    /// SEND or REG_SEND's body with its atoms as atom cache references
    /// in the order [`ControlMessage::cache_atoms`] gives them (SEND: ''
    /// then the pid's node; REG_SEND: the pid's node, '', the name).
    /// Anything else as [`ControlMessage::encode_body`].
    fn encode_body_cached(&self, out: &mut Vec<u8>) {
        let pid = |p: &Pid, ix: u8, out: &mut Vec<u8>| {
            out.extend_from_slice(&[NEW_PID_EXT, ATOM_CACHE_REF, ix]);
            out.extend_from_slice(&p.id.to_be_bytes());
            out.extend_from_slice(&p.serial.to_be_bytes());
            out.extend_from_slice(&p.creation.to_be_bytes());
        };
        match self {
            ControlMessage::Send { to } => {
                out.extend_from_slice(&[
                    SMALL_TUPLE_EXT,
                    3,
                    SMALL_INTEGER_EXT,
                    self.op(),
                    ATOM_CACHE_REF,
                    0,
                ]);
                pid(to, 1, out);
            }
            ControlMessage::RegSend { from, .. } => {
                out.extend_from_slice(&[SMALL_TUPLE_EXT, 4, SMALL_INTEGER_EXT, self.op()]);
                pid(from, 0, out);
                out.extend_from_slice(&[ATOM_CACHE_REF, 1, ATOM_CACHE_REF, 2]);
            }
            other => other.encode_body(out),
        }
    }

    /// The distinct atoms a SEND or REG_SEND puts in the atom cache
    /// header, in the order [`ControlMessage::encode_body_cached`] refers
    /// to them (the first `n` of the array); `None` for other operations
    /// (or atoms that repeat). No allocation: this runs for every message.
    fn cache_atoms(&self) -> Option<([&Atom; 3], usize)> {
        let empty = empty_atom();
        match self {
            ControlMessage::Send { to } if to.node != *empty => Some(([empty, &to.node, empty], 2)),
            ControlMessage::RegSend { from, to_name }
                if from.node != *empty && from.node != *to_name && to_name != empty =>
            {
                Some(([&from.node, empty, to_name], 3))
            }
            _ => None,
        }
    }
}

impl DistMessage {
    /// Appends the frames carrying this message to `out` through the
    /// connection's encoder (distribution header, atom cache, fragments
    /// as its flags say); the terms are encoded straight into `out`.
    /// Returns the number of frames.
    pub fn encode_frames(&self, enc: &mut OutboundEncoder, out: &mut Vec<u8>) -> usize {
        let opts = EncodeOptions::utf8_atoms();
        let payload = self
            .payload
            .as_ref()
            .map(|p| move |o: &mut Vec<u8>| erlkube_etf::encode_body_into(p, &opts, o));
        let c = &self.control;
        match c.cache_atoms() {
            Some((atoms, n)) => enc.encode_parts_cached(
                out,
                &atoms[..n],
                |o, refs| {
                    if refs {
                        c.encode_body_cached(o)
                    } else {
                        c.encode_body(o)
                    }
                },
                payload,
            ),
            None => enc.encode_parts(out, |o| c.encode_body(o), payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::control::control_part;
    use crate::dist::frame::{
        FrameDecoder, FrameRef, InboundDecoder, InboundMessage, InboundRef, Limits,
    };
    use crate::dist::DistFlags;

    fn me() -> Pid {
        Pid {
            node: Atom::new("a@host"),
            id: 7,
            serial: 0,
            creation: 3,
        }
    }

    /// NEW_PID_EXT of [`me`] with its node as SMALL_ATOM_UTF8_EXT.
    fn me_bytes() -> Vec<u8> {
        let mut b = vec![88, 119, 6];
        b.extend_from_slice(b"a@host");
        b.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
        b
    }

    /// Golden bodies (the bytes OTP's `term_to_binary(T, [{minor_version,
    /// 2}])` writes after the version byte, checked with `erl`), in both
    /// directions: encoding gives the bytes, decoding the bytes gives the
    /// message.
    #[test]
    fn golden_bodies_both_directions() {
        let mut send = vec![104, 3, 97, 2, 119, 0];
        send.extend(me_bytes());
        let mut reg_send = vec![104, 4, 97, 6];
        reg_send.extend(me_bytes());
        reg_send.extend_from_slice(&[119, 0, 119, 4]);
        reg_send.extend_from_slice(b"sink");
        let mut link = vec![104, 3, 97, 1];
        link.extend(me_bytes());
        link.extend(me_bytes());
        let cases = [
            (ControlMessage::Send { to: me() }, send),
            (
                ControlMessage::RegSend {
                    from: me(),
                    to_name: Atom::new("sink"),
                },
                reg_send,
            ),
            (
                ControlMessage::Link {
                    from: me(),
                    to: me(),
                },
                link,
            ),
        ];
        for (msg, bytes) in cases {
            let mut got = Vec::new();
            msg.encode_body(&mut got);
            assert_eq!(got, bytes, "encoding {msg:?}");
            let (term, used) = erlkube_etf::decode_body_prefix_with_atom_cache(&bytes, &[])
                .expect("golden bytes decode");
            assert_eq!(used, bytes.len());
            assert_eq!(ControlMessage::from_term(&term), Ok(msg.clone()));
            // The fast path of the inbound decoder reads the same.
            let (fast, used) = control_part(&InboundRef {
                data: &bytes,
                atoms: &[],
                versioned: false,
            })
            .expect("control part");
            assert_eq!((fast, used), (msg, bytes.len()));
        }
    }

    /// The direct writers give the bytes of the generic encoding of the
    /// control tuple, also for long and non-ASCII names.
    #[test]
    fn encode_body_matches_the_generic_encoding() {
        let long = "x".repeat(255);
        let cases = [
            ControlMessage::Send { to: me() },
            ControlMessage::RegSend {
                from: me(),
                to_name: Atom::new("sink"),
            },
            ControlMessage::RegSend {
                from: me(),
                to_name: Atom::new(&long),
            },
            ControlMessage::RegSend {
                from: me(),
                to_name: Atom::new("\u{e9}t\u{e9}"),
            },
            ControlMessage::Link {
                from: me(),
                to: me(),
            },
        ];
        for c in cases {
            let mut want = Vec::new();
            erlkube_etf::encode_body_into(&c.to_term(), &EncodeOptions::utf8_atoms(), &mut want);
            let mut got = Vec::new();
            c.encode_body(&mut got);
            assert_eq!(got, want, "{c:?}");
        }
    }

    /// Frames from [`DistMessage::encode_frames`] decode on a receiving
    /// [`InboundDecoder`] to the message written, with and without the
    /// atom cache, for SEND, REG_SEND and an operation without a payload.
    #[test]
    fn frames_round_trip_through_the_inbound_decoder() {
        let msgs = [
            DistMessage {
                control: ControlMessage::Send { to: me() },
                payload: Some(Term::atom("hello")),
            },
            DistMessage {
                control: ControlMessage::RegSend {
                    from: me(),
                    to_name: Atom::new("sink"),
                },
                payload: Some(Term::tuple(vec![Term::atom("x"), Term::Integer(70_000)])),
            },
            DistMessage {
                control: ControlMessage::Link {
                    from: me(),
                    to: me(),
                },
                payload: None,
            },
        ];
        for flags in [DistFlags::MANDATORY_25, DistFlags::DEFAULT] {
            let mut enc = OutboundEncoder::new(flags);
            let mut dec = InboundDecoder::new(flags, Limits::default());
            let mut frames = FrameDecoder::new(1 << 20);
            // Twice: the second time the atoms are already cached.
            for m in msgs.iter().chain(msgs.iter()) {
                let mut out = Vec::new();
                assert_eq!(m.encode_frames(&mut enc, &mut out), 1);
                frames.push(&out);
                let Some(FrameRef::Data(body)) = frames.next_frame_ref().unwrap() else {
                    panic!("one data frame");
                };
                let inbound: InboundMessage = dec.decode(body.to_vec()).unwrap().unwrap();
                assert_eq!(DistMessage::decode(&inbound).as_ref(), Ok(m), "{flags:?}");
            }
        }
    }
}
