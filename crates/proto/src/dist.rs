//! Distribution protocol: handshake, framing, control messages.
//!
//! Everything here is sans-IO: the caller reads bytes from its socket and
//! hands them in with the current time; the state machines hand back bytes
//! to write, events, and the next instant they want to be woken at.
//!
//! ```text
//!  socket bytes ──► handshake::{Initiator, Acceptor} ──► Established
//!                                                          │ leftover bytes
//!  socket bytes ──► frame::FrameDecoder ─► frame::Inbound ─┘
//!                   (4-byte length, ticks,   (pass-through / 131 'D' header,
//!                    max frame length)        atom cache, fragment reassembly)
//!  tick::Ticker: when to send a tick, when the peer is dead.
//!  connection::Connection: all of the above for one established link.
//! ```

pub mod connection;
pub mod control;
pub mod flags;
pub mod frame;
pub mod handshake;
pub mod tick;

pub use connection::{Connection, ConnectionConfig, ConnectionError};
pub use control::{ControlError, ControlMessage, DistMessage, LazyMessage, LazyPayload};
pub use flags::DistFlags;
pub use frame::{FrameError, InboundMessage, InboundRef, Limits};
pub use handshake::{
    Acceptor, Cookie, Established, HandshakeConfig, HandshakeError, HandshakeEvent,
    HandshakeFraming, Initiator, PeerName, Side, Status, Step,
};
