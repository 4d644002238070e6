//! Both sides of the handshake wired together under virtual time.

use super::*;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";

fn cfg(name: &str, cookie: &str, creation: u32) -> HandshakeConfig {
    HandshakeConfig::new(name, Cookie::new(cookie), creation)
}

/// An initiator and an acceptor joined by in-memory pipes, stepped under a
/// virtual clock; `decide` answers the acceptor's status question.
struct Pair {
    now: Instant,
    init: Initiator,
    acc: Acceptor,
    decide: Box<dyn FnMut(&PeerName) -> Status>,
    init_result: Result<Option<Established>, HandshakeError>,
    acc_result: Result<Option<Established>, HandshakeError>,
    names_seen: Vec<PeerName>,
}

impl Pair {
    fn new(a: HandshakeConfig, b: HandshakeConfig) -> Self {
        let now = Instant::now();
        let peer = b.this_node.clone();
        Pair::with(
            Initiator::new(a, peer, 0x1234_5678, now),
            Acceptor::new(b, 0x9abc_def0, now),
            now,
        )
    }

    fn with(init: Initiator, acc: Acceptor, now: Instant) -> Self {
        Pair {
            now,
            init,
            acc,
            decide: Box::new(|_| Status::Ok),
            init_result: Ok(None),
            acc_result: Ok(None),
            names_seen: Vec::new(),
        }
    }

    fn init_to_acc(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.init.poll_transmit() {
            moved = true;
            if self.acc_result.is_ok() && self.acc.error().is_none() {
                if let Err(e) = self.acc.handle_input(&t, self.now) {
                    self.acc_result = Err(e);
                }
            }
        }
        moved
    }

    fn acc_to_init(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.acc.poll_transmit() {
            moved = true;
            if self.init_result.is_ok() && self.init.error().is_none() {
                if let Err(e) = self.init.handle_input(&t, self.now) {
                    self.init_result = Err(e);
                }
            }
        }
        moved
    }

    fn events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.init.poll_event() {
            any = true;
            if let HandshakeEvent::Established(e) = ev {
                self.init_result = Ok(Some(e));
            }
        }
        while let Some(ev) = self.acc.poll_event() {
            any = true;
            match ev {
                HandshakeEvent::NameReceived(p) => {
                    let status = (self.decide)(&p);
                    self.names_seen.push(p);
                    if let Err(e) = self.acc.set_status(status, self.now) {
                        self.acc_result = Err(e);
                    }
                }
                HandshakeEvent::Established(e) => self.acc_result = Ok(Some(e)),
            }
        }
        any
    }

    /// Moves bytes and events until nothing changes.
    fn drive(&mut self) {
        loop {
            let a = self.init_to_acc();
            let b = self.events();
            let c = self.acc_to_init();
            let d = self.events();
            if !(a || b || c || d) {
                break;
            }
        }
    }

    /// Advances the virtual clock to the earliest timer and fires it.
    fn advance_to_next_timeout(&mut self) {
        let next = [self.init.poll_timeout(), self.acc.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            self.now = t;
            if let Err(e) = self.init.handle_timeout(self.now) {
                self.init_result = Err(e);
            }
            if let Err(e) = self.acc.handle_timeout(self.now) {
                self.acc_result = Err(e);
            }
        }
    }
}

#[test]
fn success_both_sides_agree() {
    let mut p = Pair::new(cfg(A, "secret", 11), cfg(B, "secret", 22));
    p.drive();
    let i = p.init_result.unwrap().expect("initiator established");
    let a = p.acc_result.unwrap().expect("acceptor established");
    assert_eq!(i.peer_node, B);
    assert_eq!(a.peer_node, A);
    assert_eq!(i.peer_creation, 22);
    assert_eq!(a.peer_creation, 11);
    assert_eq!(i.flags, a.flags);
    assert!(i.is_published());
    assert!(i
        .flags
        .contains(DistFlags::FRAGMENTS | DistFlags::V4_NC | DistFlags::SPAWN));
    assert!(p.init.poll_timeout().is_none() && p.acc.poll_timeout().is_none());
    assert_eq!(p.names_seen.len(), 1);
    assert!(!p.names_seen[0].old_form);
}

#[test]
fn exact_bytes_of_send_name_and_status() {
    let now = Instant::now();
    let mut c = cfg(A, "c", 7);
    c.flags = DistFlags(0x0102_0304_0506_0708);
    let mut i = Initiator::new(c, B, 1, now);
    let name = i.poll_transmit().unwrap();
    let mut want = vec![
        0,
        15 + A.len() as u8,
        b'N',
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        0,
        0,
        0,
        7,
        0,
        A.len() as u8,
    ];
    want.extend_from_slice(A.as_bytes());
    assert_eq!(name, want);

    let mut acc = Acceptor::new(cfg(B, "c", 9), 0xdead_beef, now);
    acc.handle_input(
        &frame(&{
            let mut n = vec![b'N'];
            n.extend_from_slice(&DistFlags::DEFAULT.bits().to_be_bytes());
            n.extend_from_slice(&3u32.to_be_bytes());
            n.extend_from_slice(&(A.len() as u16).to_be_bytes());
            n.extend_from_slice(A.as_bytes());
            n
        }),
        now,
    )
    .unwrap();
    acc.set_status(Status::Ok, now).unwrap();
    assert_eq!(acc.poll_transmit().unwrap(), b"\x00\x03sok");
    let ch = acc.poll_transmit().unwrap();
    assert_eq!(&ch[2..3], b"N");
    assert_eq!(&ch[3..11], &DistFlags::DEFAULT.bits().to_be_bytes());
    assert_eq!(&ch[11..15], &0xdead_beefu32.to_be_bytes());
    assert_eq!(&ch[15..19], &9u32.to_be_bytes());
    assert_eq!(&ch[21..], B.as_bytes());
}

#[test]
fn digest_is_md5_of_cookie_and_decimal_challenge() {
    // Reference values from Python's hashlib.md5.
    let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(Cookie::new("secret").digest(1234)),
        "bdfc2db0aa599f5919e565c328216a51"
    );
    assert_eq!(
        hex(Cookie::new("abc").digest(u32::MAX)),
        "beec35cc2e8e170d9c45291c5c1eb475"
    );
    // Independent check: the digest differs with the challenge and with the cookie.
    assert_ne!(
        Cookie::new("secret").digest(1234),
        Cookie::new("secret").digest(1235)
    );
    assert_ne!(
        Cookie::new("secret").digest(1234),
        Cookie::new("secreu").digest(1234)
    );
}

#[test]
fn bad_cookie_detected_by_acceptor() {
    let mut p = Pair::new(cfg(A, "one", 1), cfg(B, "two", 2));
    p.drive();
    assert_eq!(
        p.acc_result,
        Err(HandshakeError::BadChallengeReply(A.into()))
    );
    // The acceptor sent no ack, so the initiator is still waiting...
    assert!(p.init_result.as_ref().unwrap().is_none());
    // ...until its step timer fires.
    p.advance_to_next_timeout();
    assert_eq!(
        p.init_result,
        Err(HandshakeError::Timeout(Step::ChallengeAck))
    );
}

#[test]
fn peers_with_the_empty_cookie_do_not_authenticate_each_other() {
    let mut p = Pair::new(cfg(A, "", 1), cfg(B, "", 2));
    p.drive();
    assert_eq!(p.acc_result, Err(HandshakeError::EmptyCookie));
    assert!(!matches!(p.init_result, Ok(Some(_))));
    // An initiator with the empty cookie refuses an ack signed with it.
    let now = Instant::now();
    let mut i = Initiator::new(cfg(A, "", 1), B, 42, now);
    let _ = i.poll_transmit();
    i.handle_input(b"\x00\x03sok", now).unwrap();
    let mut ch = vec![b'N'];
    ch.extend_from_slice(&DistFlags::DEFAULT.bits().to_be_bytes());
    ch.extend_from_slice(&5u32.to_be_bytes());
    ch.extend_from_slice(&2u32.to_be_bytes());
    ch.extend_from_slice(&(B.len() as u16).to_be_bytes());
    ch.extend_from_slice(B.as_bytes());
    i.handle_input(&frame(&ch), now).unwrap();
    let _ = i.poll_transmit();
    let mut ack = vec![b'a'];
    ack.extend_from_slice(&Cookie::new("").digest(42));
    assert_eq!(
        i.handle_input(&frame(&ack), now),
        Err(HandshakeError::EmptyCookie)
    );
}

#[test]
fn bad_cookie_detected_by_initiator() {
    // A peer that accepts any reply but signs the ack with another cookie.
    let now = Instant::now();
    let mut i = Initiator::new(cfg(A, "mine", 1), B, 42, now);
    let _ = i.poll_transmit();
    i.handle_input(b"\x00\x03sok", now).unwrap();
    let mut ch = vec![b'N'];
    ch.extend_from_slice(&DistFlags::DEFAULT.bits().to_be_bytes());
    ch.extend_from_slice(&5u32.to_be_bytes());
    ch.extend_from_slice(&2u32.to_be_bytes());
    ch.extend_from_slice(&(B.len() as u16).to_be_bytes());
    ch.extend_from_slice(B.as_bytes());
    i.handle_input(&frame(&ch), now).unwrap();
    let reply = i.poll_transmit().unwrap();
    assert_eq!(&reply[2..3], b"r");
    assert_eq!(&reply[3..7], &42u32.to_be_bytes());
    assert_eq!(&reply[7..], &Cookie::new("mine").digest(5));
    let mut ack = vec![b'a'];
    ack.extend_from_slice(&Cookie::new("theirs").digest(42));
    assert_eq!(
        i.handle_input(&frame(&ack), now),
        Err(HandshakeError::BadChallengeAck(B.into()))
    );
    assert!(!i.is_established());
    // Later input reports the same failure.
    assert_eq!(
        i.handle_input(b"\x00\x01a", now),
        Err(HandshakeError::BadChallengeAck(B.into()))
    );
}

#[test]
fn wrong_name_in_challenge() {
    let now = Instant::now();
    // Dial "bob@127.0.0.1" but the acceptor is "bob@localhost".
    let i = Initiator::new(cfg(A, "s", 1), "bob@127.0.0.1", 1, now);
    let acc = Acceptor::new(cfg(B, "s", 2), 2, now);
    let mut p = Pair::with(i, acc, now);
    p.drive();
    assert_eq!(
        p.init_result,
        Err(HandshakeError::NameMismatch {
            expected: "bob@127.0.0.1".into(),
            got: B.into()
        })
    );
}

#[test]
fn simultaneous_connect_greater_name_wins() {
    // bob > alice: bob's acceptor, dialled by alice while dialling alice
    // itself, answers nok; alice's acceptor, dialled by bob, answers ok_simultaneous.
    assert_eq!(simultaneous_status(B, A), Status::Nok);
    assert_eq!(simultaneous_status(A, B), Status::OkSimultaneous);

    let mut ab = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    ab.decide = Box::new(|p| simultaneous_status(B, &p.node));
    ab.drive();
    assert_eq!(ab.init_result, Err(HandshakeError::SimultaneousConnectLost));
    assert_eq!(ab.acc_result, Err(HandshakeError::Refused(Status::Nok)));

    let mut ba = Pair::new(cfg(B, "s", 2), cfg(A, "s", 1));
    ba.decide = Box::new(|p| simultaneous_status(A, &p.node));
    ba.drive();
    assert_eq!(ba.init_result.unwrap().unwrap().peer_node, A);
    assert_eq!(ba.acc_result.unwrap().unwrap().peer_node, B);
}

#[test]
fn alive_true_continues_false_stops() {
    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.decide = Box::new(|_| Status::Alive);
    p.drive();
    assert!(p.init_result.unwrap().is_some());
    assert!(p.acc_result.unwrap().is_some());

    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.init.set_alive_answer(false);
    p.decide = Box::new(|_| Status::Alive);
    p.drive();
    assert_eq!(p.init_result, Err(HandshakeError::AliveRefused));
    assert_eq!(p.acc_result, Err(HandshakeError::AliveRefused));
}

#[test]
fn not_allowed_by_caller() {
    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.decide = Box::new(|_| Status::NotAllowed);
    p.drive();
    assert_eq!(p.init_result, Err(HandshakeError::NotAllowed));
    assert_eq!(
        p.acc_result,
        Err(HandshakeError::Refused(Status::NotAllowed))
    );
}

#[test]
fn acceptor_rejects_peer_without_mandatory_flags() {
    let mut a = cfg(A, "s", 1);
    a.flags = DistFlags::DEFAULT.without(DistFlags::MANDATORY_25_DIGEST | DistFlags::MAP_TAG);
    let mut p = Pair::new(a, cfg(B, "s", 2));
    p.drive();
    assert_eq!(
        p.acc_result,
        Err(HandshakeError::MissingMandatoryFlags {
            peer: A.into(),
            missing: DistFlags::MAP_TAG
        })
    );
    assert_eq!(p.init_result, Err(HandshakeError::NotAllowed));
}

#[test]
fn initiator_rejects_acceptor_without_mandatory_flags() {
    let mut a = cfg(A, "s", 1);
    a.required_flags = DistFlags::MANDATORY_26;
    let mut b = cfg(B, "s", 2);
    b.flags = DistFlags::DEFAULT.without(DistFlags::V4_NC);
    let mut p = Pair::new(a, b);
    p.drive();
    assert_eq!(
        p.init_result,
        Err(HandshakeError::MissingMandatoryFlags {
            peer: B.into(),
            missing: DistFlags::V4_NC
        })
    );
}

#[test]
fn digest_flag_alone_satisfies_mandatory_25() {
    let mut a = cfg(A, "s", 1);
    a.flags = DistFlags::DEFAULT.without(DistFlags::MANDATORY_25) | DistFlags::MANDATORY_25_DIGEST;
    let mut p = Pair::new(a, cfg(B, "s", 2));
    p.drive();
    let est = p.acc_result.unwrap().unwrap();
    assert!(est.peer_flags.contains(DistFlags::MANDATORY_25));
}

#[test]
fn hidden_initiator_makes_a_hidden_connection() {
    let mut p = Pair::new(cfg(A, "s", 1).hidden(), cfg(B, "s", 2));
    p.drive();
    assert!(!p.init_result.unwrap().unwrap().is_published());
    assert!(!p.acc_result.unwrap().unwrap().is_published());
}

#[test]
fn old_n_form_with_complement() {
    let now = Instant::now();
    let i = Initiator::new_old_form(cfg(A, "s", 77), B, 3, now);
    let acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    let mut p = Pair::with(i, acc, now);
    p.drive();
    assert!(p.names_seen[0].old_form);
    assert_eq!(p.names_seen[0].creation, None);
    let a = p.acc_result.unwrap().unwrap();
    assert_eq!(a.peer_creation, 77);
    // High flag bits came with the complement.
    assert!(a
        .peer_flags
        .contains(DistFlags::V4_NC | DistFlags::SPAWN | DistFlags::ALIAS));
    assert!(p.init_result.unwrap().is_some());
}

#[test]
fn old_n_form_wrong_version() {
    let now = Instant::now();
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    let mut n = vec![b'n', 0, 6];
    n.extend_from_slice(&(DistFlags::DEFAULT.bits() as u32).to_be_bytes());
    n.extend_from_slice(A.as_bytes());
    assert_eq!(
        acc.handle_input(&frame(&n), now),
        Err(HandshakeError::UnsupportedVersion(6))
    );
}

#[test]
fn timeouts_on_every_step() {
    let now = Instant::now();
    let t = DEFAULT_STEP_TIMEOUT;

    // Acceptor waiting for a name.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    assert_eq!(acc.poll_timeout(), Some(now + t));
    assert_eq!(
        acc.handle_timeout(now + t - Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(
        acc.handle_timeout(now + t),
        Err(HandshakeError::Timeout(Step::Name))
    );
    assert_eq!(acc.poll_timeout(), None);

    // Initiator waiting for the status; the acceptor never answers.
    let mut i = Initiator::new(cfg(A, "s", 1), B, 1, now);
    assert_eq!(
        i.handle_timeout(now + t),
        Err(HandshakeError::Timeout(Step::Status))
    );

    // Initiator waiting for the challenge: the timer restarts at "ok".
    let mut i = Initiator::new(cfg(A, "s", 1), B, 1, now);
    let later = now + Duration::from_secs(5);
    i.handle_input(b"\x00\x03sok", later).unwrap();
    assert_eq!(i.poll_timeout(), Some(later + t));
    assert_eq!(i.handle_timeout(now + t), Ok(()));
    assert_eq!(
        i.handle_timeout(later + t),
        Err(HandshakeError::Timeout(Step::Challenge))
    );

    // Acceptor waiting for the caller's decision, then for the reply.
    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.init_to_acc();
    assert!(matches!(
        p.acc.poll_event(),
        Some(HandshakeEvent::NameReceived(_))
    ));
    p.now += t;
    assert_eq!(
        p.acc.handle_timeout(p.now),
        Err(HandshakeError::Timeout(Step::StatusDecision))
    );

    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.init_to_acc();
    p.events();
    let _ = p.acc.poll_transmit(); // status and challenge never delivered
    p.advance_to_next_timeout();
    assert_eq!(
        p.acc_result,
        Err(HandshakeError::Timeout(Step::ChallengeReply))
    );

    // Acceptor waiting for the alive reply.
    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.decide = Box::new(|_| Status::Alive);
    p.init_to_acc();
    p.events();
    p.advance_to_next_timeout();
    assert_eq!(p.acc_result, Err(HandshakeError::Timeout(Step::AliveReply)));

    // Acceptor waiting for the complement of an old-form initiator.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    let mut n = vec![b'n', 0, 5];
    n.extend_from_slice(&(DistFlags::DEFAULT.bits() as u32).to_be_bytes());
    n.extend_from_slice(A.as_bytes());
    acc.handle_input(&frame(&n), now).unwrap();
    acc.poll_event();
    acc.set_status(Status::Ok, now).unwrap();
    assert_eq!(
        acc.handle_timeout(now + t),
        Err(HandshakeError::Timeout(Step::Complement))
    );
}

#[test]
fn garbage_frames() {
    let now = Instant::now();
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    assert_eq!(
        acc.handle_input(b"\x00\x04GET ", now),
        Err(HandshakeError::UnexpectedMessage {
            step: Step::Name,
            tag: b'G'
        })
    );

    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    assert_eq!(
        acc.handle_input(b"\x00\x00", now),
        Err(HandshakeError::EmptyFrame(Step::Name))
    );

    let mut i = Initiator::new(cfg(A, "s", 1), B, 1, now);
    assert_eq!(
        i.handle_input(b"\x00\x05shmm?", now),
        Err(HandshakeError::UnknownStatus("hmm?".into()))
    );

    let mut i = Initiator::new(cfg(A, "s", 1), B, 1, now);
    assert_eq!(
        i.handle_input(b"\x00\x01a", now),
        Err(HandshakeError::UnexpectedMessage {
            step: Step::Status,
            tag: b'a'
        })
    );

    let mut i = Initiator::new(cfg(A, "s", 1), B, 1, now);
    assert_eq!(
        i.handle_input(b"\x00\x0csnamed:xxxxx", now),
        Err(HandshakeError::DynamicNameUnsupported)
    );

    // Names that are not name@host.
    for bad in ["nohost", "@host", "a@", "a@b@c"] {
        let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
        let mut n = vec![b'N'];
        n.extend_from_slice(&DistFlags::DEFAULT.bits().to_be_bytes());
        n.extend_from_slice(&1u32.to_be_bytes());
        n.extend_from_slice(&(bad.len() as u16).to_be_bytes());
        n.extend_from_slice(bad.as_bytes());
        assert_eq!(
            acc.handle_input(&frame(&n), now),
            Err(HandshakeError::InvalidNodeName(bad.into()))
        );
    }

    // A peer asking for a dynamic name gets not_allowed.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    let mut n = vec![b'N'];
    n.extend_from_slice(
        &(DistFlags::DEFAULT | DistFlags::NAME_ME)
            .bits()
            .to_be_bytes(),
    );
    n.extend_from_slice(&1u32.to_be_bytes());
    n.extend_from_slice(&9u16.to_be_bytes());
    n.extend_from_slice(b"localhost");
    assert_eq!(
        acc.handle_input(&frame(&n), now),
        Err(HandshakeError::DynamicNameUnsupported)
    );
    assert_eq!(acc.poll_transmit().unwrap(), b"\x00\x0csnot_allowed");
}

#[test]
fn truncated_frames() {
    let now = Instant::now();
    // A frame whose body is shorter than the fixed fields.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    assert_eq!(
        acc.handle_input(b"\x00\x03N\x00\x00", now),
        Err(HandshakeError::Truncated(Step::Name))
    );

    // A name length pointing past the end of the frame.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    let mut n = vec![b'N'];
    n.extend_from_slice(&DistFlags::DEFAULT.bits().to_be_bytes());
    n.extend_from_slice(&1u32.to_be_bytes());
    n.extend_from_slice(&200u16.to_be_bytes());
    n.extend_from_slice(A.as_bytes());
    assert_eq!(
        acc.handle_input(&frame(&n), now),
        Err(HandshakeError::Truncated(Step::Name))
    );

    // A challenge reply one byte short.
    let mut p = Pair::new(cfg(A, "s", 1), cfg(B, "s", 2));
    p.init_to_acc();
    p.events();
    let mut r = vec![b'r', 0, 0, 0, 1];
    r.extend_from_slice(&[0; 15]);
    assert_eq!(
        p.acc.handle_input(&frame(&r), p.now),
        Err(HandshakeError::Truncated(Step::ChallengeReply))
    );

    // An incomplete frame is not an error: it waits for more bytes.
    let mut acc = Acceptor::new(cfg(B, "s", 2), 4, now);
    assert_eq!(acc.handle_input(b"\x00\x20N\x00", now), Ok(()));
    assert_eq!(acc.poll_event(), None);
}

#[test]
fn byte_at_a_time_and_leftover_after_ack() {
    let now = Instant::now();
    let mut i = Initiator::new(cfg(A, "s", 1), B, 10, now);
    let mut acc = Acceptor::new(cfg(B, "s", 2), 20, now);
    let mut to_acc: Vec<u8> = Vec::new();
    let mut to_init: Vec<u8> = Vec::new();
    let mut done = (None, None);
    for _ in 0..1000 {
        while let Some(t) = i.poll_transmit() {
            to_acc.extend(t);
        }
        while let Some(t) = acc.poll_transmit() {
            to_init.extend(t);
        }
        if !to_acc.is_empty() {
            acc.handle_input(&[to_acc.remove(0)], now).unwrap();
        }
        if !to_init.is_empty() {
            let b = to_init.remove(0);
            // Append the first data frame right behind the ack.
            if to_init.is_empty() && acc.is_established() {
                i.handle_input(&[b, 0, 0, 0, 0, 0xAA], now).unwrap();
            } else {
                i.handle_input(&[b], now).unwrap();
            }
        }
        while let Some(ev) = acc.poll_event() {
            match ev {
                HandshakeEvent::NameReceived(_) => acc.set_status(Status::Ok, now).unwrap(),
                HandshakeEvent::Established(e) => done.1 = Some(e),
            }
        }
        while let Some(HandshakeEvent::Established(e)) = i.poll_event() {
            done.0 = Some(e);
        }
        if done.0.is_some() && done.1.is_some() {
            break;
        }
    }
    let (i, a) = (done.0.unwrap(), done.1.unwrap());
    assert_eq!(i.leftover, vec![0, 0, 0, 0, 0xAA]);
    assert!(a.leftover.is_empty());
}

#[test]
fn cookie_is_not_printed() {
    let c = cfg(A, "very-secret-cookie", 1);
    let printed = format!(
        "{c:?} {:?}",
        Initiator::new(c.clone(), B, 1, Instant::now())
    );
    assert!(!printed.contains("very-secret-cookie"));
}

/// Inside TLS (`inet_tls_dist`) every handshake frame has a 4-byte length.
#[test]
fn four_byte_framing_for_tls() {
    let tls = |name, creation| {
        let mut c = cfg(name, "secret", creation);
        c.framing = HandshakeFraming::FourByte;
        c
    };
    let now = Instant::now();
    let mut init = Initiator::new(tls(A, 11), B, 0x1234_5678, now);
    let first = init.poll_transmit().expect("send_name");
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]) as usize;
    assert_eq!(len, first.len() - 4, "a 4-byte length prefix");
    assert_eq!(first[4], b'N', "the N send_name follows the length");
    let mut p = Pair::new(tls(A, 11), tls(B, 22));
    p.drive();
    assert_eq!(p.init_result.unwrap().expect("initiator").peer_node, B);
    assert_eq!(p.acc_result.unwrap().expect("acceptor").peer_node, A);
}

/// A 4-byte length beyond any handshake message fails at once instead of
/// buffering what the peer sends.
#[test]
fn four_byte_framing_refuses_a_huge_frame() {
    let mut c = cfg(B, "secret", 22);
    c.framing = HandshakeFraming::FourByte;
    let now = Instant::now();
    let mut acc = Acceptor::new(c, 1, now);
    let err = acc.handle_input(&[0x7f, 0, 0, 0, b'N'], now).unwrap_err();
    assert_eq!(err, HandshakeError::FrameTooLarge(0x7f00_0000));
}
