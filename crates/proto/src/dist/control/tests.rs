use super::*;

fn pid(id: u32) -> Pid {
    Pid {
        node: Atom::new("a@h"),
        id,
        serial: 0,
        creation: 3,
    }
}

fn reference(w: u32) -> Reference {
    Reference {
        node: Atom::new("b@h"),
        creation: 4,
        ids: vec![w, 2, 3],
    }
}

fn every_message() -> Vec<ControlMessage> {
    use ControlMessage as C;
    let (a, b) = (pid(1), pid(2));
    let tok = Term::tuple(vec![Term::atom("token"), Term::Integer(1)]);
    let reason = Term::atom("normal");
    let mfa = Mfa {
        module: Atom::new("erpc"),
        function: Atom::new("execute_call"),
        arity: 4,
    };
    vec![
        C::Link {
            from: a.clone(),
            to: b.clone(),
        },
        C::Send { to: b.clone() },
        C::Exit {
            from: a.clone(),
            to: b.clone(),
            reason: reason.clone(),
        },
        C::Unlink {
            from: a.clone(),
            to: b.clone(),
        },
        C::NodeLink,
        C::RegSend {
            from: a.clone(),
            to_name: Atom::new("net_kernel"),
        },
        C::GroupLeader {
            from: a.clone(),
            to: b.clone(),
        },
        C::Exit2 {
            from: a.clone(),
            to: b.clone(),
            reason: reason.clone(),
        },
        C::SendTt {
            to: b.clone(),
            token: tok.clone(),
        },
        C::ExitTt {
            from: a.clone(),
            to: b.clone(),
            token: tok.clone(),
            reason: reason.clone(),
        },
        C::RegSendTt {
            from: a.clone(),
            to_name: Atom::new("rex"),
            token: tok.clone(),
        },
        C::Exit2Tt {
            from: a.clone(),
            to: b.clone(),
            token: tok.clone(),
            reason: reason.clone(),
        },
        C::MonitorP {
            from: a.clone(),
            to: Term::atom("net_kernel"),
            reference: reference(1),
        },
        C::DemonitorP {
            from: a.clone(),
            to: Term::Pid(b.clone()),
            reference: reference(2),
        },
        C::MonitorPExit {
            from: Term::atom("x"),
            to: a.clone(),
            reference: reference(3),
            reason: reason.clone(),
        },
        C::SendSender {
            from: a.clone(),
            to: b.clone(),
        },
        C::SendSenderTt {
            from: a.clone(),
            to: b.clone(),
            token: tok.clone(),
        },
        C::PayloadExit {
            from: a.clone(),
            to: b.clone(),
        },
        C::PayloadExitTt {
            from: a.clone(),
            to: b.clone(),
            token: tok.clone(),
        },
        C::PayloadExit2 {
            from: a.clone(),
            to: b.clone(),
        },
        C::PayloadExit2Tt {
            from: a.clone(),
            to: b.clone(),
            token: tok.clone(),
        },
        C::PayloadMonitorPExit {
            from: Term::Pid(b.clone()),
            to: a.clone(),
            reference: reference(4),
        },
        C::SpawnRequest {
            req_id: reference(5),
            from: a.clone(),
            group_leader: b.clone(),
            mfa: mfa.clone(),
            options: Term::list(vec![Term::atom("monitor")]),
        },
        C::SpawnRequestTt {
            req_id: reference(6),
            from: a.clone(),
            group_leader: b.clone(),
            mfa,
            options: Term::nil(),
            token: tok.clone(),
        },
        C::SpawnReply {
            req_id: reference(7),
            to: a.clone(),
            flags: 0,
            result: Term::Pid(b.clone()),
        },
        C::SpawnReplyTt {
            req_id: reference(8),
            to: a.clone(),
            flags: 1,
            result: Term::atom("badarg"),
            token: tok.clone(),
        },
        C::AliasSend {
            from: a.clone(),
            alias: reference(9),
        },
        C::AliasSendTt {
            from: a.clone(),
            alias: reference(10),
            token: tok,
        },
        C::UnlinkId {
            id: Term::Integer(77),
            from: a.clone(),
            to: b.clone(),
        },
        C::UnlinkIdAck {
            id: Term::Integer(78),
            from: a,
            to: b,
        },
    ]
}

#[test]
fn every_operation_round_trips() {
    let all = every_message();
    let ops: Vec<u8> = all.iter().map(ControlMessage::op).collect();
    assert_eq!(
        ops,
        [
            1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
            31, 32, 33, 34, 35, 36
        ]
    );
    for m in all {
        let t = m.to_term();
        assert_eq!(t.as_tuple().unwrap()[0], Term::Integer(m.op() as i64));
        assert_eq!(ControlMessage::from_term(&t).unwrap(), m, "{t:?}");
    }
}

#[test]
fn which_operations_carry_a_payload() {
    let with: Vec<u8> = every_message()
        .iter()
        .filter(|m| m.has_payload())
        .map(ControlMessage::op)
        .collect();
    assert_eq!(
        with,
        [2, 6, 12, 16, 22, 23, 24, 25, 26, 27, 28, 29, 30, 33, 34]
    );
}

#[test]
fn send_and_reg_send_write_the_unused_field() {
    let t = ControlMessage::Send { to: pid(1) }.to_term();
    assert_eq!(t.as_tuple().unwrap()[1], Term::atom(""));
    let t = ControlMessage::RegSend {
        from: pid(1),
        to_name: Atom::new("rex"),
    }
    .to_term();
    assert_eq!(t.as_tuple().unwrap()[2], Term::atom(""));
}

#[test]
fn malformed_control_messages() {
    let t = |v: Vec<Term>| Term::tuple(v);
    assert_eq!(
        ControlMessage::from_term(&t(vec![Term::Integer(99)])),
        Err(ControlError::UnknownOperation(99))
    );
    assert_eq!(
        ControlMessage::from_term(&t(vec![Term::Integer(9)])),
        Err(ControlError::UnknownOperation(9))
    );
    assert_eq!(
        ControlMessage::from_term(&t(vec![Term::Integer(-1)])),
        Err(ControlError::UnknownOperation(-1))
    );
    assert!(matches!(
        ControlMessage::from_term(&Term::atom("x")),
        Err(ControlError::NotAControlTuple(_))
    ));
    assert!(matches!(
        ControlMessage::from_term(&t(vec![])),
        Err(ControlError::NotAControlTuple(_))
    ));
    assert_eq!(
        ControlMessage::from_term(&t(vec![Term::Integer(1), Term::Pid(pid(1))])),
        Err(ControlError::WrongArity { op: 1, got: 2 })
    );
    assert_eq!(
        ControlMessage::from_term(&t(vec![
            Term::Integer(1),
            Term::Pid(pid(1)),
            Term::atom("x")
        ])),
        Err(ControlError::BadField { op: 1, field: "to" })
    );
    assert_eq!(
        ControlMessage::from_term(&t(vec![
            Term::Integer(19),
            Term::Pid(pid(1)),
            Term::Integer(5),
            Term::Integer(5)
        ])),
        Err(ControlError::BadField {
            op: 19,
            field: "to"
        })
    );
}

fn inbound(msg: &DistMessage, versioned: bool) -> InboundMessage {
    let (c, p) = msg.encode();
    let mut data = Vec::new();
    if versioned {
        data.extend_from_slice(&c);
        if let Some(p) = p {
            data.extend_from_slice(&p);
        }
    } else {
        data.extend_from_slice(&c[1..]);
        if let Some(p) = p {
            data.extend_from_slice(&p[1..]);
        }
    }
    InboundMessage {
        atoms: vec![],
        data,
        versioned,
    }
}

#[test]
fn dist_message_decodes_both_framings() {
    let m = DistMessage {
        control: ControlMessage::RegSend {
            from: pid(1),
            to_name: Atom::new("echo"),
        },
        payload: Some(Term::tuple(vec![
            Term::Pid(pid(1)),
            Term::binary(vec![1, 2, 3]),
        ])),
    };
    assert_eq!(DistMessage::decode(&inbound(&m, true)).unwrap(), m);
    assert_eq!(DistMessage::decode(&inbound(&m, false)).unwrap(), m);
    let m = DistMessage {
        control: ControlMessage::NodeLink,
        payload: None,
    };
    assert_eq!(DistMessage::decode(&inbound(&m, false)).unwrap(), m);
}

#[test]
fn dist_message_payload_errors() {
    let m = DistMessage {
        control: ControlMessage::Send { to: pid(1) },
        payload: None,
    };
    assert_eq!(
        DistMessage::decode(&inbound(&m, false)),
        Err(ControlError::MissingPayload(2))
    );
    assert_eq!(
        DistMessage::decode(&inbound(&m, true)),
        Err(ControlError::MissingPayload(2))
    );
    let m = DistMessage {
        control: ControlMessage::NodeLink,
        payload: Some(Term::nil()),
    };
    assert_eq!(
        DistMessage::decode(&inbound(&m, false)),
        Err(ControlError::TrailingBytes(1))
    );
    let bad = InboundMessage {
        atoms: vec![],
        data: vec![104, 1, 97],
        versioned: false,
    };
    assert!(matches!(
        DistMessage::decode(&bad),
        Err(ControlError::Decode(_))
    ));
}

#[test]
fn atom_cache_refs_resolve_through_the_header_atoms() {
    // {6, Pid, '', net_kernel} with '' and net_kernel as ATOM_CACHE_REF 0 and 1.
    let m = DistMessage {
        control: ControlMessage::RegSend {
            from: pid(1),
            to_name: Atom::new("net_kernel"),
        },
        payload: Some(Term::atom("hello")),
    };
    let plain = inbound(&m, false);
    let (c, _) = m.encode();
    // Re-encode the control tuple by hand with cache refs.
    let mut pid_bytes = Vec::new();
    erlkube_etf::encode_with(
        &Term::Pid(pid(1)),
        &EncodeOptions::utf8_atoms(),
        &mut pid_bytes,
    );
    let mut data = vec![104, 4, 97, 6];
    data.extend_from_slice(&pid_bytes[1..]);
    data.extend_from_slice(&[82, 0, 82, 1]);
    data.extend_from_slice(&[82, 2]); // payload: the atom 'hello' from the cache
    let msg = InboundMessage {
        atoms: vec![Atom::new(""), Atom::new("net_kernel"), Atom::new("hello")],
        data,
        versioned: false,
    };
    assert_eq!(DistMessage::decode(&msg).unwrap(), m);
    assert!(c.len() > 1 && !plain.data.is_empty());
}

/// The generic path: the control tuple through the term decoder.
fn decode_generic(m: &InboundMessage) -> Result<DistMessage, ControlError> {
    let (term, used) = erlkube_etf::decode_body_prefix_with_atom_cache(&m.data, &m.atoms)?;
    let control = ControlMessage::from_term(&term)?;
    DistMessage::with_payload(control, &m.data, used, false, &m.atoms)
}

#[test]
fn send_and_reg_send_fast_path_agrees_with_the_term_decoder() {
    let atoms = vec![Atom::new(""), Atom::new("a@h"), Atom::new("sink")];
    let pid_ref = |out: &mut Vec<u8>, ix: u8| {
        out.extend_from_slice(&[88, 82, ix]);
        out.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
    };
    let pid_text = |out: &mut Vec<u8>| {
        out.extend_from_slice(&[88, 119, 3]);
        out.extend_from_slice(b"a@h");
        out.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
    };
    let payload = [104, 2, 119, 5, b'h', b'e', b'l', b'l', b'o', 97, 9];
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // SEND with cache refs, with text atoms, with an old-style atom.
    let mut d = vec![104, 3, 97, 2, 82, 0];
    pid_ref(&mut d, 1);
    cases.push(d);
    let mut d = vec![104, 3, 97, 2, 119, 0];
    pid_text(&mut d);
    cases.push(d);
    let mut d = vec![104, 3, 97, 2, 100, 0, 0];
    pid_text(&mut d);
    cases.push(d);
    // REG_SEND, cache refs and text.
    let mut d = vec![104, 4, 97, 6];
    pid_ref(&mut d, 1);
    d.extend_from_slice(&[82, 0, 82, 2]);
    cases.push(d);
    let mut d = vec![104, 4, 97, 6];
    pid_text(&mut d);
    d.extend_from_slice(&[119, 0, 119, 4, b's', b'i', b'n', b'k']);
    cases.push(d);
    let complete = cases.clone();
    // Malformed: a bad cache index, a non-pid, bad UTF-8, cut short.
    let mut d = vec![104, 3, 97, 2, 82, 9];
    pid_ref(&mut d, 1);
    cases.push(d);
    cases.push(vec![104, 3, 97, 2, 82, 0, 97, 1]);
    let mut d = vec![104, 4, 97, 6];
    pid_ref(&mut d, 1);
    d.extend_from_slice(&[82, 0, 119, 2, 0xff, 0xfe]);
    cases.push(d);
    for c in &complete {
        for cut in [1, 5, c.len() - 1] {
            cases.push(c[..cut].to_vec());
        }
    }
    for (i, data) in cases.into_iter().enumerate() {
        for with_payload in [true, false] {
            let mut data = data.clone();
            if with_payload {
                data.extend_from_slice(&payload);
            }
            let m = InboundMessage {
                atoms: atoms.clone(),
                data,
                versioned: false,
            };
            let fast = DistMessage::decode(&m);
            assert_eq!(fast, decode_generic(&m), "case {i}, payload {with_payload}");
            if i < complete.len() && with_payload {
                assert!(fast.is_ok(), "case {i}: {fast:?}");
            }
        }
    }
}

/// The lazy path (check, keep encoded, decode later) gives what the eager
/// decoder gives, for good payloads and for every prefix and one-byte
/// change of them.
#[test]
fn lazy_decoding_agrees_with_eager_decoding() {
    let payloads = [
        Term::atom("hello"),
        Term::tuple(vec![Term::atom("hello"), Term::Integer(70_000)]),
        Term::tuple(vec![
            Term::Pid(pid(9)),
            Term::binary(vec![1, 2, 3]),
            Term::List(vec![Term::Float(1.5), Term::Integer(-1)]),
        ]),
        erlkube_etf::parse("#{a => 1, <<\"b\">> => [x, y]}").unwrap(),
    ];
    let lazy = |m: &InboundMessage| {
        DistMessage::decode_lazy(&m.as_ref()).and_then(|l| {
            let payload = l.payload.map(LazyPayload::into_term).transpose()?;
            Ok(DistMessage {
                control: l.control,
                payload,
            })
        })
    };
    for p in payloads {
        let m = DistMessage {
            control: ControlMessage::RegSend {
                from: pid(1),
                to_name: Atom::new("sink"),
            },
            payload: Some(p),
        };
        let good = inbound(&m, false);
        assert_eq!(lazy(&good), Ok(m.clone()));
        let mut variants = Vec::new();
        for cut in 1..good.data.len() {
            variants.push(good.data[..cut].to_vec());
        }
        for i in 0..good.data.len() {
            for b in [0u8, 1, 82, 100, 104, 255] {
                let mut d = good.data.clone();
                d[i] = b;
                variants.push(d);
            }
        }
        for data in variants {
            let m = InboundMessage {
                atoms: vec![Atom::new("x")],
                data,
                versioned: false,
            };
            assert_eq!(lazy(&m), DistMessage::decode(&m), "{:?}", m.data);
        }
    }
}
