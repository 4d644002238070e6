//! The wire protocols of Erlang distribution, with no IO and no clock:
//! bytes in, bytes and events out, time passed in by the caller.
//!
//! - [`epmd`]: port-mapper requests and responses.
//! - [`dist`]: distribution handshake, framing and control messages.
//! - [`name`]: the node-name check (`alive@host`) every layer uses.

pub mod dist;
pub mod epmd;
pub mod name;
