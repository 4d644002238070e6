//! Control messages: the first term of every distribution message, a
//! tuple whose first element is the operation number. Some operations are
//! followed by a second term, the payload (the message sent, an exit
//! reason, spawn arguments).

use erlkube_etf::tags::{NEW_PID_EXT, SMALL_ATOM_UTF8_EXT, SMALL_INTEGER_EXT, SMALL_TUPLE_EXT};
use erlkube_etf::{Atom, DecodeError, EncodeOptions, Pid, Reference, Term};

use super::frame::{InboundMessage, InboundRef, ATOM_CACHE_REF};

mod encode;

/// Operation numbers (`DOP_*` in OTP's `dist.h`).
pub mod op {
    #![allow(missing_docs)]
    pub const LINK: u8 = 1;
    pub const SEND: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const UNLINK: u8 = 4;
    pub const NODE_LINK: u8 = 5;
    pub const REG_SEND: u8 = 6;
    pub const GROUP_LEADER: u8 = 7;
    pub const EXIT2: u8 = 8;
    pub const SEND_TT: u8 = 12;
    pub const EXIT_TT: u8 = 13;
    pub const REG_SEND_TT: u8 = 16;
    pub const EXIT2_TT: u8 = 18;
    pub const MONITOR_P: u8 = 19;
    pub const DEMONITOR_P: u8 = 20;
    pub const MONITOR_P_EXIT: u8 = 21;
    pub const SEND_SENDER: u8 = 22;
    pub const SEND_SENDER_TT: u8 = 23;
    pub const PAYLOAD_EXIT: u8 = 24;
    pub const PAYLOAD_EXIT_TT: u8 = 25;
    pub const PAYLOAD_EXIT2: u8 = 26;
    pub const PAYLOAD_EXIT2_TT: u8 = 27;
    pub const PAYLOAD_MONITOR_P_EXIT: u8 = 28;
    pub const SPAWN_REQUEST: u8 = 29;
    pub const SPAWN_REQUEST_TT: u8 = 30;
    pub const SPAWN_REPLY: u8 = 31;
    pub const SPAWN_REPLY_TT: u8 = 32;
    pub const ALIAS_SEND: u8 = 33;
    pub const ALIAS_SEND_TT: u8 = 34;
    pub const UNLINK_ID: u8 = 35;
    pub const UNLINK_ID_ACK: u8 = 36;
}

/// Every control message of the distribution protocol. Fields that the
/// protocol allows to be a pid *or* a name (or any term) are [`Term`]s.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ControlMessage {
    /// `{1, FromPid, ToPid}`
    Link { from: Pid, to: Pid },
    /// `{2, Unused, ToPid}` + message
    Send { to: Pid },
    /// `{3, FromPid, ToPid, Reason}`
    Exit { from: Pid, to: Pid, reason: Term },
    /// `{4, FromPid, ToPid}`
    Unlink { from: Pid, to: Pid },
    /// `{5}`
    NodeLink,
    /// `{6, FromPid, Unused, ToName}` + message
    RegSend { from: Pid, to_name: Atom },
    /// `{7, FromPid, ToPid}`
    GroupLeader { from: Pid, to: Pid },
    /// `{8, FromPid, ToPid, Reason}`
    Exit2 { from: Pid, to: Pid, reason: Term },
    /// `{12, Unused, ToPid, TraceToken}` + message
    SendTt { to: Pid, token: Term },
    /// `{13, FromPid, ToPid, TraceToken, Reason}`
    ExitTt {
        from: Pid,
        to: Pid,
        token: Term,
        reason: Term,
    },
    /// `{16, FromPid, Unused, ToName, TraceToken}` + message
    RegSendTt {
        from: Pid,
        to_name: Atom,
        token: Term,
    },
    /// `{18, FromPid, ToPid, TraceToken, Reason}`
    Exit2Tt {
        from: Pid,
        to: Pid,
        token: Term,
        reason: Term,
    },
    /// `{19, FromPid, ToProc, Ref}`: ToProc is a pid or a registered name.
    MonitorP {
        from: Pid,
        to: Term,
        reference: Reference,
    },
    /// `{20, FromPid, ToProc, Ref}`
    DemonitorP {
        from: Pid,
        to: Term,
        reference: Reference,
    },
    /// `{21, FromProc, ToPid, Ref, Reason}`
    MonitorPExit {
        from: Term,
        to: Pid,
        reference: Reference,
        reason: Term,
    },
    /// `{22, FromPid, ToPid}` + message
    SendSender { from: Pid, to: Pid },
    /// `{23, FromPid, ToPid, TraceToken}` + message
    SendSenderTt { from: Pid, to: Pid, token: Term },
    /// `{24, FromPid, ToPid}` + reason
    PayloadExit { from: Pid, to: Pid },
    /// `{25, FromPid, ToPid, TraceToken}` + reason
    PayloadExitTt { from: Pid, to: Pid, token: Term },
    /// `{26, FromPid, ToPid}` + reason
    PayloadExit2 { from: Pid, to: Pid },
    /// `{27, FromPid, ToPid, TraceToken}` + reason
    PayloadExit2Tt { from: Pid, to: Pid, token: Term },
    /// `{28, FromProc, ToPid, Ref}` + reason
    PayloadMonitorPExit {
        from: Term,
        to: Pid,
        reference: Reference,
    },
    /// `{29, ReqId, From, GroupLeader, {Module, Function, Arity}, OptList}` + argument list
    SpawnRequest {
        req_id: Reference,
        from: Pid,
        group_leader: Pid,
        mfa: Mfa,
        options: Term,
    },
    /// `{30, ReqId, From, GroupLeader, {Module, Function, Arity}, OptList, Token}` + argument list
    SpawnRequestTt {
        req_id: Reference,
        from: Pid,
        group_leader: Pid,
        mfa: Mfa,
        options: Term,
        token: Term,
    },
    /// `{31, ReqId, To, Flags, Result}`: Result is the new pid or an error atom.
    SpawnReply {
        req_id: Reference,
        to: Pid,
        flags: i64,
        result: Term,
    },
    /// `{32, ReqId, To, Flags, Result, Token}`
    SpawnReplyTt {
        req_id: Reference,
        to: Pid,
        flags: i64,
        result: Term,
        token: Term,
    },
    /// `{33, FromPid, Alias}` + message
    AliasSend { from: Pid, alias: Reference },
    /// `{34, FromPid, Alias, Token}` + message
    AliasSendTt {
        from: Pid,
        alias: Reference,
        token: Term,
    },
    /// `{35, Id, FromPid, ToPid}`
    UnlinkId { id: Term, from: Pid, to: Pid },
    /// `{36, Id, FromPid, ToPid}`
    UnlinkIdAck { id: Term, from: Pid, to: Pid },
}

/// `{Module, Function, Arity}` of a spawn request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mfa {
    /// Module.
    pub module: Atom,
    /// Function.
    pub function: Atom,
    /// Arity.
    pub arity: u32,
}

/// A control message that does not fit the protocol.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The control message is not a tuple starting with an integer.
    #[error("control message is not a tuple with an operation number: {0}")]
    NotAControlTuple(String),
    /// An operation number this protocol does not define.
    #[error("unknown control message operation {0}")]
    UnknownOperation(i64),
    /// A tuple with the wrong number of elements for its operation.
    #[error("control message {op} has {got} elements, which is not that operation's size")]
    WrongArity {
        /// The operation.
        op: u8,
        /// Elements received (including the operation).
        got: usize,
    },
    /// A field of the wrong type.
    #[error("control message {op}: field {field} has the wrong type")]
    BadField {
        /// The operation.
        op: u8,
        /// The field's name.
        field: &'static str,
    },
    /// An operation that needs a payload arrived without one.
    #[error("control message {0} lacks its payload")]
    MissingPayload(u8),
    /// Bytes after the last term of a message.
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    /// A term that does not decode.
    #[error("bad term in distribution message: {0}")]
    Decode(#[from] DecodeError),
}

fn pid(op: u8, field: &'static str, t: &Term) -> Result<Pid, ControlError> {
    t.as_pid()
        .cloned()
        .ok_or(ControlError::BadField { op, field })
}

fn reference(op: u8, field: &'static str, t: &Term) -> Result<Reference, ControlError> {
    t.as_reference()
        .cloned()
        .ok_or(ControlError::BadField { op, field })
}

fn atom(op: u8, field: &'static str, t: &Term) -> Result<Atom, ControlError> {
    t.as_atom()
        .cloned()
        .ok_or(ControlError::BadField { op, field })
}

fn integer(op: u8, field: &'static str, t: &Term) -> Result<i64, ControlError> {
    t.as_integer().ok_or(ControlError::BadField { op, field })
}

fn proc(op: u8, field: &'static str, t: &Term) -> Result<Term, ControlError> {
    match t {
        Term::Pid(_) | Term::Atom(_) => Ok(t.clone()),
        _ => Err(ControlError::BadField { op, field }),
    }
}

fn p(pid: &Pid) -> Term {
    Term::Pid(pid.clone())
}

fn r(r: &Reference) -> Term {
    Term::from(r.clone())
}

fn i(op: u8) -> Term {
    Term::Integer(op as i64)
}

fn unused() -> Term {
    Term::atom("")
}

impl Mfa {
    fn to_term(&self) -> Term {
        Term::tuple(vec![
            Term::Atom(self.module.clone()),
            Term::Atom(self.function.clone()),
            Term::Integer(self.arity as i64),
        ])
    }

    fn from_term(op: u8, t: &Term) -> Result<Mfa, ControlError> {
        let bad = ControlError::BadField { op, field: "mfa" };
        match t.as_tuple() {
            Some([m, f, a]) => Ok(Mfa {
                module: m.as_atom().cloned().ok_or(bad.clone())?,
                function: f.as_atom().cloned().ok_or(bad.clone())?,
                arity: a
                    .as_integer()
                    .and_then(|a| u32::try_from(a).ok())
                    .ok_or(bad)?,
            }),
            _ => Err(bad),
        }
    }
}

impl ControlMessage {
    /// The operation number.
    pub fn op(&self) -> u8 {
        use ControlMessage as C;
        match self {
            C::Link { .. } => op::LINK,
            C::Send { .. } => op::SEND,
            C::Exit { .. } => op::EXIT,
            C::Unlink { .. } => op::UNLINK,
            C::NodeLink => op::NODE_LINK,
            C::RegSend { .. } => op::REG_SEND,
            C::GroupLeader { .. } => op::GROUP_LEADER,
            C::Exit2 { .. } => op::EXIT2,
            C::SendTt { .. } => op::SEND_TT,
            C::ExitTt { .. } => op::EXIT_TT,
            C::RegSendTt { .. } => op::REG_SEND_TT,
            C::Exit2Tt { .. } => op::EXIT2_TT,
            C::MonitorP { .. } => op::MONITOR_P,
            C::DemonitorP { .. } => op::DEMONITOR_P,
            C::MonitorPExit { .. } => op::MONITOR_P_EXIT,
            C::SendSender { .. } => op::SEND_SENDER,
            C::SendSenderTt { .. } => op::SEND_SENDER_TT,
            C::PayloadExit { .. } => op::PAYLOAD_EXIT,
            C::PayloadExitTt { .. } => op::PAYLOAD_EXIT_TT,
            C::PayloadExit2 { .. } => op::PAYLOAD_EXIT2,
            C::PayloadExit2Tt { .. } => op::PAYLOAD_EXIT2_TT,
            C::PayloadMonitorPExit { .. } => op::PAYLOAD_MONITOR_P_EXIT,
            C::SpawnRequest { .. } => op::SPAWN_REQUEST,
            C::SpawnRequestTt { .. } => op::SPAWN_REQUEST_TT,
            C::SpawnReply { .. } => op::SPAWN_REPLY,
            C::SpawnReplyTt { .. } => op::SPAWN_REPLY_TT,
            C::AliasSend { .. } => op::ALIAS_SEND,
            C::AliasSendTt { .. } => op::ALIAS_SEND_TT,
            C::UnlinkId { .. } => op::UNLINK_ID,
            C::UnlinkIdAck { .. } => op::UNLINK_ID_ACK,
        }
    }

    /// True when the operation is followed by a payload term.
    pub fn has_payload(&self) -> bool {
        op_has_payload(self.op())
    }

    /// The control tuple.
    pub fn to_term(&self) -> Term {
        use ControlMessage as C;
        let o = i(self.op());
        let items = match self {
            C::Link { from, to } | C::Unlink { from, to } | C::GroupLeader { from, to } => {
                vec![o, p(from), p(to)]
            }
            C::SendSender { from, to }
            | C::PayloadExit { from, to }
            | C::PayloadExit2 { from, to } => {
                vec![o, p(from), p(to)]
            }
            C::Send { to } => vec![o, unused(), p(to)],
            C::Exit { from, to, reason } | C::Exit2 { from, to, reason } => {
                vec![o, p(from), p(to), reason.clone()]
            }
            C::NodeLink => vec![o],
            C::RegSend { from, to_name } => vec![o, p(from), unused(), Term::Atom(to_name.clone())],
            C::SendTt { to, token } => vec![o, unused(), p(to), token.clone()],
            C::ExitTt {
                from,
                to,
                token,
                reason,
            }
            | C::Exit2Tt {
                from,
                to,
                token,
                reason,
            } => {
                vec![o, p(from), p(to), token.clone(), reason.clone()]
            }
            C::RegSendTt {
                from,
                to_name,
                token,
            } => {
                vec![
                    o,
                    p(from),
                    unused(),
                    Term::Atom(to_name.clone()),
                    token.clone(),
                ]
            }
            C::MonitorP {
                from,
                to,
                reference,
            }
            | C::DemonitorP {
                from,
                to,
                reference,
            } => {
                vec![o, p(from), to.clone(), r(reference)]
            }
            C::MonitorPExit {
                from,
                to,
                reference,
                reason,
            } => vec![o, from.clone(), p(to), r(reference), reason.clone()],
            C::SendSenderTt { from, to, token }
            | C::PayloadExitTt { from, to, token }
            | C::PayloadExit2Tt { from, to, token } => vec![o, p(from), p(to), token.clone()],
            C::PayloadMonitorPExit {
                from,
                to,
                reference,
            } => vec![o, from.clone(), p(to), r(reference)],
            C::SpawnRequest {
                req_id,
                from,
                group_leader,
                mfa,
                options,
            } => {
                vec![
                    o,
                    r(req_id),
                    p(from),
                    p(group_leader),
                    mfa.to_term(),
                    options.clone(),
                ]
            }
            C::SpawnRequestTt {
                req_id,
                from,
                group_leader,
                mfa,
                options,
                token,
            } => {
                vec![
                    o,
                    r(req_id),
                    p(from),
                    p(group_leader),
                    mfa.to_term(),
                    options.clone(),
                    token.clone(),
                ]
            }
            C::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => {
                vec![o, r(req_id), p(to), Term::Integer(*flags), result.clone()]
            }
            C::SpawnReplyTt {
                req_id,
                to,
                flags,
                result,
                token,
            } => {
                vec![
                    o,
                    r(req_id),
                    p(to),
                    Term::Integer(*flags),
                    result.clone(),
                    token.clone(),
                ]
            }
            C::AliasSend { from, alias } => vec![o, p(from), r(alias)],
            C::AliasSendTt { from, alias, token } => vec![o, p(from), r(alias), token.clone()],
            C::UnlinkId { id, from, to } | C::UnlinkIdAck { id, from, to } => {
                vec![o, id.clone(), p(from), p(to)]
            }
        };
        Term::tuple(items)
    }

    /// Reads a control tuple. Each operation's fields are a slice
    /// pattern, so a tuple of the wrong size falls through to an error
    /// and no field is read by index.
    pub fn from_term(term: &Term) -> Result<ControlMessage, ControlError> {
        use ControlMessage as C;
        let not_ctl =
            || ControlError::NotAControlTuple(format!("{term:?}").chars().take(200).collect());
        let items = term.as_tuple().ok_or_else(not_ctl)?;
        let Some((Term::Integer(first), fields)) = items.split_first() else {
            return Err(not_ctl());
        };
        let first = *first;
        let o = u8::try_from(first).map_err(|_| ControlError::UnknownOperation(first))?;
        let msg = match (o, fields) {
            (op::LINK, [from, to]) => C::Link {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::SEND, [_unused, to]) => C::Send {
                to: pid(o, "to", to)?,
            },
            (op::EXIT, [from, to, reason]) => C::Exit {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                reason: reason.clone(),
            },
            (op::UNLINK, [from, to]) => C::Unlink {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::NODE_LINK, []) => C::NodeLink,
            (op::REG_SEND, [from, _unused, to_name]) => C::RegSend {
                from: pid(o, "from", from)?,
                to_name: atom(o, "to_name", to_name)?,
            },
            (op::GROUP_LEADER, [from, to]) => C::GroupLeader {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::EXIT2, [from, to, reason]) => C::Exit2 {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                reason: reason.clone(),
            },
            (op::SEND_TT, [_unused, to, token]) => C::SendTt {
                to: pid(o, "to", to)?,
                token: token.clone(),
            },
            (op::EXIT_TT, [from, to, token, reason]) => C::ExitTt {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                token: token.clone(),
                reason: reason.clone(),
            },
            (op::REG_SEND_TT, [from, _unused, to_name, token]) => C::RegSendTt {
                from: pid(o, "from", from)?,
                to_name: atom(o, "to_name", to_name)?,
                token: token.clone(),
            },
            (op::EXIT2_TT, [from, to, token, reason]) => C::Exit2Tt {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                token: token.clone(),
                reason: reason.clone(),
            },
            (op::MONITOR_P, [from, to, r]) => C::MonitorP {
                from: pid(o, "from", from)?,
                to: proc(o, "to", to)?,
                reference: reference(o, "ref", r)?,
            },
            (op::DEMONITOR_P, [from, to, r]) => C::DemonitorP {
                from: pid(o, "from", from)?,
                to: proc(o, "to", to)?,
                reference: reference(o, "ref", r)?,
            },
            (op::MONITOR_P_EXIT, [from, to, r, reason]) => C::MonitorPExit {
                from: proc(o, "from", from)?,
                to: pid(o, "to", to)?,
                reference: reference(o, "ref", r)?,
                reason: reason.clone(),
            },
            (op::SEND_SENDER, [from, to]) => C::SendSender {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::SEND_SENDER_TT, [from, to, token]) => C::SendSenderTt {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                token: token.clone(),
            },
            (op::PAYLOAD_EXIT, [from, to]) => C::PayloadExit {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::PAYLOAD_EXIT_TT, [from, to, token]) => C::PayloadExitTt {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                token: token.clone(),
            },
            (op::PAYLOAD_EXIT2, [from, to]) => C::PayloadExit2 {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
            },
            (op::PAYLOAD_EXIT2_TT, [from, to, token]) => C::PayloadExit2Tt {
                from: pid(o, "from", from)?,
                to: pid(o, "to", to)?,
                token: token.clone(),
            },
            (op::PAYLOAD_MONITOR_P_EXIT, [from, to, r]) => C::PayloadMonitorPExit {
                from: proc(o, "from", from)?,
                to: pid(o, "to", to)?,
                reference: reference(o, "ref", r)?,
            },
            (op::SPAWN_REQUEST, [req_id, from, gl, mfa, options]) => C::SpawnRequest {
                req_id: reference(o, "req_id", req_id)?,
                from: pid(o, "from", from)?,
                group_leader: pid(o, "group_leader", gl)?,
                mfa: Mfa::from_term(o, mfa)?,
                options: options.clone(),
            },
            (op::SPAWN_REQUEST_TT, [req_id, from, gl, mfa, options, token]) => C::SpawnRequestTt {
                req_id: reference(o, "req_id", req_id)?,
                from: pid(o, "from", from)?,
                group_leader: pid(o, "group_leader", gl)?,
                mfa: Mfa::from_term(o, mfa)?,
                options: options.clone(),
                token: token.clone(),
            },
            (op::SPAWN_REPLY, [req_id, to, flags, result]) => C::SpawnReply {
                req_id: reference(o, "req_id", req_id)?,
                to: pid(o, "to", to)?,
                flags: integer(o, "flags", flags)?,
                result: result.clone(),
            },
            (op::SPAWN_REPLY_TT, [req_id, to, flags, result, token]) => C::SpawnReplyTt {
                req_id: reference(o, "req_id", req_id)?,
                to: pid(o, "to", to)?,
                flags: integer(o, "flags", flags)?,
                result: result.clone(),
                token: token.clone(),
            },
            (op::ALIAS_SEND, [from, alias]) => C::AliasSend {
                from: pid(o, "from", from)?,
                alias: reference(o, "alias", alias)?,
            },
            (op::ALIAS_SEND_TT, [from, alias, token]) => C::AliasSendTt {
                from: pid(o, "from", from)?,
                alias: reference(o, "alias", alias)?,
                token: token.clone(),
            },
            (op::UNLINK_ID | op::UNLINK_ID_ACK, [id, from, to]) => {
                let id = match id {
                    Term::Integer(_) | Term::BigInt(_) => id.clone(),
                    _ => return Err(ControlError::BadField { op: o, field: "id" }),
                };
                let (from, to) = (pid(o, "from", from)?, pid(o, "to", to)?);
                if o == op::UNLINK_ID {
                    C::UnlinkId { id, from, to }
                } else {
                    C::UnlinkIdAck { id, from, to }
                }
            }
            (1..=8 | 12 | 13 | 16 | 18..=36, _) => {
                return Err(ControlError::WrongArity {
                    op: o,
                    got: items.len(),
                })
            }
            _ => return Err(ControlError::UnknownOperation(first)),
        };
        Ok(msg)
    }
}

/// True when operation `o` is followed by a payload term.
pub fn op_has_payload(o: u8) -> bool {
    matches!(
        o,
        op::SEND
            | op::REG_SEND
            | op::SEND_TT
            | op::REG_SEND_TT
            | op::SEND_SENDER
            | op::SEND_SENDER_TT
            | op::PAYLOAD_EXIT
            | op::PAYLOAD_EXIT_TT
            | op::PAYLOAD_EXIT2
            | op::PAYLOAD_EXIT2_TT
            | op::PAYLOAD_MONITOR_P_EXIT
            | op::SPAWN_REQUEST
            | op::SPAWN_REQUEST_TT
            | op::ALIAS_SEND
            | op::ALIAS_SEND_TT
    )
}

/// Reads SEND `{2, '', To}` and REG_SEND `{6, From, '', Name}` written
/// the usual way (small tuple, small integer, NEW_PID_EXT, atoms as cache
/// references or SMALL_ATOM_UTF8_EXT); `None` for anything else, which
/// the generic decoder then handles (and rejects, if it is malformed).
/// Returns the control message and the bytes it used.
fn fast_control(data: &[u8], atoms: &[Atom]) -> Option<(ControlMessage, usize)> {
    match data {
        [SMALL_TUPLE_EXT, 3, SMALL_INTEGER_EXT, op::SEND, ..] => {
            let mut r = Reader { data, pos: 4 };
            r.atom(atoms)?;
            let to = r.pid(atoms)?;
            Some((ControlMessage::Send { to }, r.pos))
        }
        [SMALL_TUPLE_EXT, 4, SMALL_INTEGER_EXT, op::REG_SEND, ..] => {
            let mut r = Reader { data, pos: 4 };
            let from = r.pid(atoms)?;
            r.atom(atoms)?;
            let to_name = r.atom(atoms)?;
            Some((ControlMessage::RegSend { from, to_name }, r.pos))
        }
        _ => None,
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.data.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn atom(&mut self, atoms: &[Atom]) -> Option<Atom> {
        match self.byte()? {
            ATOM_CACHE_REF => atoms.get(self.byte()? as usize).cloned(),
            SMALL_ATOM_UTF8_EXT => {
                let n = self.byte()? as usize;
                let b = self.data.get(self.pos..self.pos + n)?;
                // At most 255 bytes, so at most 255 characters.
                let text = std::str::from_utf8(b).ok()?;
                self.pos += n;
                Some(erlkube_etf::intern::intern(text))
            }
            _ => None,
        }
    }

    fn pid(&mut self, atoms: &[Atom]) -> Option<Pid> {
        if self.byte()? != NEW_PID_EXT {
            return None;
        }
        let node = self.atom(atoms)?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = self.u32()?;
        Some(Pid {
            node,
            id,
            serial,
            creation,
        })
    }
}

/// The control message (decoded) and where it ended.
fn control_part(msg: &InboundRef<'_>) -> Result<(ControlMessage, usize), ControlError> {
    let (data, atoms) = (msg.data, msg.atoms);
    if msg.versioned {
        let (term, used) = erlkube_etf::decode_prefix_with_atom_cache(data, atoms)?;
        return Ok((ControlMessage::from_term(&term)?, used));
    }
    if let Some(found) = fast_control(data, atoms) {
        return Ok(found);
    }
    // After a distribution header the terms have no version byte.
    let (term, used) = erlkube_etf::decode_body_prefix_with_atom_cache(data, atoms)?;
    Ok((ControlMessage::from_term(&term)?, used))
}

/// A distribution message from [`DistMessage::decode_lazy`].
#[derive(Debug)]
pub struct LazyMessage<'a> {
    /// The control message.
    pub control: ControlMessage,
    /// The payload, for operations that carry one.
    pub payload: Option<LazyPayload<'a>>,
}

/// A payload, decoded or checked and still encoded.
#[derive(Debug)]
pub enum LazyPayload<'a> {
    /// Decoded (pass-through messages are decoded at once).
    Decoded(Term),
    /// A term body (no version byte) that passed the decoder's checks;
    /// ATOM_CACHE_REF indexes `atoms`.
    Encoded {
        /// The term's bytes, exactly.
        body: &'a [u8],
        /// The message's atom cache atoms.
        atoms: &'a [Atom],
    },
}

impl LazyPayload<'_> {
    /// The payload as a term. Fails only for what the check before left
    /// out: a map with a repeated key.
    pub fn into_term(self) -> Result<Term, ControlError> {
        match self {
            LazyPayload::Decoded(t) => Ok(t),
            LazyPayload::Encoded { body, atoms } => decode_payload_body(body, atoms),
        }
    }
}

/// Decodes a payload body kept by [`LazyPayload::Encoded`] (bytes and
/// atoms stored elsewhere in between): the whole of `body` must be one term.
pub fn decode_payload_body(body: &[u8], atoms: &[Atom]) -> Result<Term, ControlError> {
    let (t, n) = erlkube_etf::decode_body_prefix_with_atom_cache(body, atoms)?;
    if n != body.len() {
        return Err(ControlError::TrailingBytes(body.len() - n));
    }
    Ok(t)
}

/// A decoded distribution message.
#[derive(Clone, Debug, PartialEq)]
pub struct DistMessage {
    /// The control message.
    pub control: ControlMessage,
    /// The payload, for operations that carry one.
    pub payload: Option<Term>,
}

impl DistMessage {
    /// Decodes the control message and payload of an inbound message,
    /// resolving atom cache references.
    pub fn decode(msg: &InboundMessage) -> Result<DistMessage, ControlError> {
        Self::decode_ref(&msg.as_ref())
    }

    /// [`DistMessage::decode`] of a borrowed message
    /// ([`crate::dist::Connection::poll_message_ref`]). SEND and REG_SEND
    /// after a distribution header, the bulk of the traffic, are read
    /// straight from the bytes; anything else (and any unusual encoding
    /// of those two) goes through the generic term decoder, with the same
    /// result.
    pub fn decode_ref(msg: &InboundRef<'_>) -> Result<DistMessage, ControlError> {
        let (control, used) = control_part(msg)?;
        Self::with_payload(control, msg.data, used, msg.versioned, msg.atoms)
    }

    /// Like [`DistMessage::decode_ref`], but a payload after a
    /// distribution header is only checked (every check of the decoder
    /// except unique map keys, without building anything) and handed back
    /// encoded, for whoever receives it to decode
    /// ([`LazyPayload::into_term`]). The BEAM works the same way: the
    /// receiving process decodes a distributed message, not the
    /// connection.
    pub fn decode_lazy<'a>(msg: &InboundRef<'a>) -> Result<LazyMessage<'a>, ControlError> {
        let (control, used) = control_part(msg)?;
        if msg.versioned {
            let m = Self::with_payload(control, msg.data, used, true, msg.atoms)?;
            return Ok(LazyMessage {
                control: m.control,
                payload: m.payload.map(LazyPayload::Decoded),
            });
        }
        let data = msg.data;
        if !control.has_payload() {
            if used != data.len() {
                return Err(ControlError::TrailingBytes(data.len() - used));
            }
            return Ok(LazyMessage {
                control,
                payload: None,
            });
        }
        if used >= data.len() {
            return Err(ControlError::MissingPayload(control.op()));
        }
        let body = &data[used..];
        let n = erlkube_etf::validate_body_prefix_with_atom_cache(body, msg.atoms)?;
        if n != body.len() {
            return Err(ControlError::TrailingBytes(body.len() - n));
        }
        Ok(LazyMessage {
            control,
            payload: Some(LazyPayload::Encoded {
                body,
                atoms: msg.atoms,
            }),
        })
    }

    /// Decodes the payload (at `used`, where the control message ended)
    /// when the operation has one; `versioned` says whether it starts with
    /// a version byte.
    fn with_payload(
        control: ControlMessage,
        data: &[u8],
        used: usize,
        versioned: bool,
        atoms: &[Atom],
    ) -> Result<DistMessage, ControlError> {
        if !control.has_payload() {
            if used != data.len() {
                return Err(ControlError::TrailingBytes(data.len() - used));
            }
            return Ok(DistMessage {
                control,
                payload: None,
            });
        }
        if used >= data.len() {
            return Err(ControlError::MissingPayload(control.op()));
        }
        let rest = &data[used..];
        let (p, n) = if versioned {
            erlkube_etf::decode_prefix_with_atom_cache(rest, atoms)?
        } else {
            erlkube_etf::decode_body_prefix_with_atom_cache(rest, atoms)?
        };
        if used + n != data.len() {
            return Err(ControlError::TrailingBytes(data.len() - used - n));
        }
        Ok(DistMessage {
            control,
            payload: Some(p),
        })
    }

    /// Encodes the control message and payload as versioned ETF, ready for
    /// [`crate::dist::Connection::send`].
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let opts = EncodeOptions::utf8_atoms();
        let mut ctl = Vec::with_capacity(64);
        erlkube_etf::encode_with(&self.control.to_term(), &opts, &mut ctl);
        let payload = self.payload.as_ref().map(|p| {
            let mut out = Vec::with_capacity(64);
            erlkube_etf::encode_with(p, &opts, &mut out);
            out
        });
        (ctl, payload)
    }
}

#[cfg(test)]
mod tests;
