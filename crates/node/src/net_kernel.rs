//! The part of `net_kernel` peers talk to: `is_auth`, which
//! `net_adm:ping/1` asks (the answer `yes` makes it say `pong`).

use std::sync::Arc;

use erlkube_etf::{Atom, Pid, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::dispatch::{Peer, Services};
use crate::Inner;

/// Serves the registered name `net_kernel`.
pub(crate) fn register(services: &mut Services) {
    services.register_name("net_kernel", is_auth);
}

/// The part of `net_kernel` peers talk to: `is_auth` (net_adm:ping).
fn is_auth(_inner: &Arc<Inner>, peer: &mut Peer<'_>, _from: &Pid, msg: Term) {
    let Some([label, from_tag, request]) = msg.as_tuple() else {
        return;
    };
    if label.as_atom().map(Atom::as_str) != Some("$gen_call") {
        return;
    }
    let Some([Term::Pid(caller), tag]) = from_tag.as_tuple() else {
        return;
    };
    let answer = match request.as_tuple() {
        Some([op, _node]) if op.as_atom().map(Atom::as_str) == Some("is_auth") => Term::atom("yes"),
        _ => {
            tracing::debug!(request = %request, "net_kernel call not supported");
            return;
        }
    };
    peer.reply(
        ControlMessage::Send { to: caller.clone() },
        Some(Term::tuple(vec![tag.clone(), answer])),
    );
}
