use super::*;

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn all_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new(usize::MAX);
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f);
    }
    assert_eq!(d.buffered(), 0);
    out
}

const HDR: DistFlags = DistFlags(DistFlags::DIST_HDR_ATOM_CACHE.0 | DistFlags::FRAGMENTS.0);

#[test]
fn frames_ticks_and_partial_input() {
    let mut d = FrameDecoder::new(100);
    let mut bytes = vec![0, 0, 0, 0];
    bytes.extend(framed(b"pabc"));
    bytes.extend([0, 0, 0, 0]);
    for (i, b) in bytes.iter().enumerate() {
        d.push(&[*b]);
        let f = d.next_frame().unwrap();
        match i {
            3 | 15 => assert_eq!(f, Some(Frame::Tick)),
            11 => assert_eq!(f, Some(Frame::Data(b"pabc".to_vec()))),
            _ => assert_eq!(f, None),
        }
    }
}

#[test]
fn frame_longer_than_max_is_an_error() {
    let mut d = FrameDecoder::new(100);
    d.push(&[0, 0, 0, 101]);
    assert_eq!(
        d.next_frame(),
        Err(FrameError::FrameTooLong { len: 101, max: 100 })
    );
    let mut d = FrameDecoder::new(100);
    d.push(&framed(&[112; 100]));
    assert!(matches!(d.next_frame(), Ok(Some(Frame::Data(_)))));
}

#[test]
fn pass_through_keeps_versioned_terms() {
    let mut dec = InboundDecoder::new(DistFlags::EMPTY, Limits::default());
    let m = dec.decode(vec![112, 131, 106]).unwrap().unwrap();
    assert_eq!(
        m,
        InboundMessage {
            atoms: vec![],
            data: vec![131, 106],
            versioned: true
        }
    );
    assert_eq!(dec.decode(vec![112]), Err(FrameError::EmptyMessage));
    assert_eq!(dec.decode(vec![7, 1]), Err(FrameError::UnknownFrameType(7)));
}

#[test]
fn header_needs_negotiation() {
    let mut dec = InboundDecoder::new(DistFlags::EMPTY, Limits::default());
    assert_eq!(
        dec.decode(vec![131, b'D', 0, 106]),
        Err(FrameError::HeaderNotNegotiated('D'))
    );
    let mut dec = InboundDecoder::new(DistFlags::DIST_HDR_ATOM_CACHE, Limits::default());
    let mut e = vec![131, b'E'];
    e.extend_from_slice(&[0; 16]);
    assert_eq!(dec.decode(e), Err(FrameError::HeaderNotNegotiated('E')));
    assert_eq!(
        dec.decode(vec![131, b'X']),
        Err(FrameError::UnknownHeader(b'X'))
    );
}

/// A 'D' header with 3 refs: two new entries (segment 0 index 5, segment 2
/// index 1) and one old (segment 0 index 5 again), short atoms.
#[test]
fn normal_header_atom_cache_new_and_cached_entries() {
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    // nibbles: ref0 = 8|0, ref1 = 8|2, ref2 = 0|0, last (long atoms) = 0
    let body = vec![
        131, b'D', 3, 0xA8, 0x00, // flags: byte0 = ref1<<4 | ref0, byte1 = last<<4 | ref2
        5, 2, b'o', b'k', // new: index 5, len 2, "ok"
        1, 3, b'f', b'o', b'o', // new: segment 2, index 1, "foo"
        5,    // cached: index 5
        104, 0, // control message bytes (opaque here)
    ];
    let m = dec.decode(body).unwrap().unwrap();
    let atoms: Vec<&str> = m.atoms.iter().map(|a| a.as_str()).collect();
    assert_eq!(atoms, ["ok", "foo", "ok"]);
    assert_eq!(m.data, vec![104, 0]);
    assert!(!m.versioned);
    assert_eq!(dec.atom_cache().get(5).map(|a| a.as_str()), Some("ok"));
    assert_eq!(
        dec.atom_cache().get(2 * 256 + 1).map(|a| a.as_str()),
        Some("foo")
    );

    // A later message refers to slot 2*256+1 without the text.
    let m = dec
        .decode(vec![131, b'D', 1, 0x02, 1, 106])
        .unwrap()
        .unwrap();
    assert_eq!(m.atoms[0].as_str(), "foo");
}

#[test]
fn normal_header_long_atoms_and_no_refs() {
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    // 2 refs, both new in segment 7; last nibble (index 2) has the long-atoms bit.
    let mut body = vec![131, b'D', 2, 0xFF, 0x01];
    body.extend_from_slice(&[255, 0, 1, b'a']);
    body.extend_from_slice(&[254, 0x01, 0x2c]); // len 300
    let long = "é".repeat(150);
    body.extend_from_slice(long.as_bytes());
    body.push(106);
    let m = dec.decode(body).unwrap().unwrap();
    assert_eq!(m.atoms[0].as_str(), "a");
    assert_eq!(m.atoms[1].as_str(), long);
    assert_eq!(dec.atom_cache().get(2047).map(|a| a.as_str()), Some("a"));

    let m = dec.decode(vec![131, b'D', 0, 106]).unwrap().unwrap();
    assert!(m.atoms.is_empty());
    assert_eq!(m.data, vec![106]);
}

#[test]
fn bad_headers() {
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    assert_eq!(
        dec.decode(vec![131, b'D', 1, 0x00, 9, 106]),
        Err(FrameError::UnknownAtomCacheEntry(9))
    );
    assert_eq!(
        dec.decode(vec![131, b'D', 1, 0x08, 9, 5, b'a']),
        Err(FrameError::TruncatedHeader)
    );
    assert_eq!(
        dec.decode(vec![131, b'D', 2]),
        Err(FrameError::TruncatedHeader)
    );
    assert_eq!(
        dec.decode(vec![131, b'D']),
        Err(FrameError::TruncatedHeader)
    );
    assert_eq!(
        dec.decode(vec![131, b'D', 1, 0x08, 9, 1, 0xff, 106]),
        Err(FrameError::InvalidCachedAtom(9))
    );
    assert_eq!(
        dec.decode(vec![131, b'D', 0]),
        Err(FrameError::EmptyMessage)
    );
}

fn big_payload(n: usize) -> Vec<u8> {
    let mut p = vec![131, 109];
    p.extend_from_slice(&((n - 6) as u32).to_be_bytes());
    p.extend((0..n - 6).map(|i| (i % 251) as u8));
    p
}

#[test]
fn outbound_pass_through_without_header_flags() {
    let mut enc = OutboundEncoder::new(DistFlags::MANDATORY_25);
    let mut out = Vec::new();
    assert_eq!(enc.encode(&[131, 104, 0], Some(&[131, 106]), &mut out), 1);
    assert_eq!(out, framed(&[112, 131, 104, 0, 131, 106]));
    // Large messages are not fragmented without FRAGMENTS.
    let mut out = Vec::new();
    assert_eq!(
        enc.encode(&[131, 104, 0], Some(&big_payload(200_000)), &mut out),
        1
    );
}

#[test]
fn outbound_normal_header_strips_version_bytes() {
    let mut enc = OutboundEncoder::new(DistFlags::DIST_HDR_ATOM_CACHE);
    let mut out = Vec::new();
    enc.encode(&[131, 104, 0], Some(&[131, 106]), &mut out);
    assert_eq!(out, framed(&[131, b'D', 0, 104, 0, 106]));
    // Without FRAGMENTS a large message is one 'D' frame.
    let mut out = Vec::new();
    assert_eq!(
        enc.encode(&[131, 104, 0], Some(&big_payload(200_000)), &mut out),
        1
    );
}

#[test]
fn fragments_round_trip_and_control_stays_whole() {
    let control: Vec<u8> = [131, 104, 2]
        .into_iter()
        .chain(std::iter::repeat_n(97, 100))
        .collect();
    let payload = big_payload(10 * 1024 * 1024 + 17);
    let mut enc = OutboundEncoder::new(HDR);
    let mut out = Vec::new();
    let n = enc.encode(&control, Some(&payload), &mut out);
    let total = control.len() - 1 + payload.len() - 1;
    assert_eq!(n, total.div_ceil(FRAGMENT_SIZE));
    let frames = all_frames(&out);
    assert_eq!(frames.len(), n);
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    let mut got = None;
    for (i, f) in frames.into_iter().enumerate() {
        let Frame::Data(body) = f else { panic!("tick") };
        assert_eq!(body[1], if i == 0 { b'E' } else { b'F' });
        let frag = u64::from_be_bytes(body[10..18].try_into().unwrap());
        assert_eq!(frag, (n - i) as u64);
        assert!(body.len() <= 19 + FRAGMENT_SIZE);
        let r = dec.decode(body).unwrap();
        if i + 1 < n {
            assert!(r.is_none());
            assert_eq!(dec.in_flight(), 1);
        } else {
            got = r;
        }
    }
    let m = got.unwrap();
    assert_eq!(&m.data[..control.len() - 1], &control[1..]);
    assert_eq!(&m.data[control.len() - 1..], &payload[1..]);
    assert_eq!(dec.in_flight(), 0);

    // A control message larger than a fragment stays in the first one.
    let mut enc = OutboundEncoder::new(HDR);
    enc.set_fragment_size(10);
    let mut out = Vec::new();
    let control = [131, 104, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    enc.encode(&control, Some(&[131, 1, 2, 3, 4, 5]), &mut out);
    let frames = all_frames(&out);
    assert_eq!(frames.len(), 2);
    let Frame::Data(first) = &frames[0] else {
        panic!()
    };
    assert_eq!(&first[19..], &control[1..]);
}

#[test]
fn interleaved_fragment_sequences() {
    let mut enc = OutboundEncoder::new(HDR);
    enc.set_fragment_size(4);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    enc.encode(&[131, 1, 2, 3, 4], Some(&[131, 5, 6, 7, 8, 9]), &mut a);
    enc.encode(
        &[131, 11, 12, 13, 14],
        Some(&[131, 15, 16, 17, 18, 19]),
        &mut b,
    );
    let (fa, fb) = (all_frames(&a), all_frames(&b));
    assert_eq!(fa.len(), 3);
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    let mut done = Vec::new();
    for (x, y) in fa.into_iter().zip(fb) {
        for f in [x, y] {
            let Frame::Data(body) = f else { panic!() };
            if let Some(m) = dec.decode(body).unwrap() {
                done.push(m.data);
            }
        }
    }
    assert_eq!(
        done,
        vec![
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![11, 12, 13, 14, 15, 16, 17, 18, 19]
        ]
    );
}

fn frag(kind: u8, seq: u64, id: u64, data: &[u8]) -> Vec<u8> {
    let mut v = vec![131, kind];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    if kind == b'E' {
        v.push(0);
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn fragment_violations() {
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    assert_eq!(
        dec.decode(frag(b'F', 9, 1, b"x")),
        Err(FrameError::UnknownSequence(9))
    );
    assert_eq!(
        dec.decode(frag(b'E', 9, 0, b"x")),
        Err(FrameError::ZeroFragmentId(9))
    );
    assert_eq!(dec.decode(frag(b'E', 9, 3, b"x")), Ok(None));
    assert_eq!(
        dec.decode(frag(b'E', 9, 3, b"x")),
        Err(FrameError::DuplicateSequence(9))
    );
    assert_eq!(
        dec.decode(frag(b'F', 9, 1, b"x")),
        Err(FrameError::FragmentOutOfOrder {
            seq: 9,
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        dec.decode(vec![131, b'F', 0, 0]),
        Err(FrameError::TruncatedHeader)
    );
    // A single-fragment 'E' message completes at once.
    let m = dec.decode(frag(b'E', 10, 1, b"yz")).unwrap().unwrap();
    assert_eq!(m.data, b"yz");

    let limits = Limits {
        max_in_flight: 2,
        max_message_len: 10,
        ..Limits::default()
    };
    let mut dec = InboundDecoder::new(HDR, limits);
    assert_eq!(dec.decode(frag(b'E', 1, 5, b"a")), Ok(None));
    assert_eq!(dec.decode(frag(b'E', 2, 5, b"a")), Ok(None));
    assert_eq!(
        dec.decode(frag(b'E', 3, 5, b"a")),
        Err(FrameError::TooManyInFlight(2))
    );
    assert_eq!(
        dec.decode(frag(b'F', 1, 4, b"1234567890")),
        Err(FrameError::MessageTooLarge { len: 11, max: 10 })
    );
    assert_eq!(dec.decode(frag(b'F', 2, 4, b"12345678")), Ok(None));
    assert_eq!(
        dec.decode(frag(b'F', 2, 3, b"12")),
        Err(FrameError::MessageTooLarge { len: 11, max: 10 })
    );
}

/// Unfinished fragmented messages share one budget per connection: each
/// message may stay under `max_message_len` and the count under
/// `max_in_flight`, yet together they are refused past
/// `max_partial_total`; a completed message gives its bytes back.
#[test]
fn partial_messages_share_one_budget() {
    let limits = Limits {
        max_in_flight: 64,
        max_message_len: 200,
        max_partial_total: 250,
        ..Limits::default()
    };
    let mut dec = InboundDecoder::new(HDR, limits);
    let chunk = [7u8; 60];
    // Two messages of 60 + 60 bytes so far: 240 bytes held.
    for seq in 1..=2u64 {
        assert_eq!(dec.decode(frag(b'E', seq, 9, &chunk)), Ok(None));
        assert_eq!(dec.decode(frag(b'F', seq, 8, &chunk)), Ok(None));
    }
    assert_eq!(dec.partial_bytes(), 240);
    // A third message's first fragment would make it 300 bytes.
    assert_eq!(
        dec.decode(frag(b'E', 3, 9, &chunk)),
        Err(FrameError::PartialBudgetExceeded {
            total: 300,
            budget: 250
        })
    );
    assert_eq!(dec.partial_bytes(), 240);

    // Finishing a message returns its bytes to the budget.
    let mut dec = InboundDecoder::new(HDR, limits);
    assert_eq!(dec.decode(frag(b'E', 1, 2, &chunk)), Ok(None));
    assert_eq!(dec.decode(frag(b'E', 2, 3, &chunk)), Ok(None));
    assert_eq!(dec.partial_bytes(), 120);
    let m = dec.decode(frag(b'F', 1, 1, &chunk)).unwrap().unwrap();
    assert_eq!(m.data.len(), 120);
    assert_eq!(dec.partial_bytes(), 60);
    // ...so a continuation that would not have fit before fits now.
    assert_eq!(dec.decode(frag(b'F', 2, 2, &chunk)), Ok(None));
    assert_eq!(dec.decode(frag(b'E', 3, 2, &chunk)), Ok(None));
    assert_eq!(dec.partial_bytes(), 180);
    assert_eq!(
        dec.decode(frag(b'F', 3, 1, &[1u8; 71])),
        Err(FrameError::PartialBudgetExceeded {
            total: 251,
            budget: 250
        })
    );
}

/// `encode_terms` writes the same bytes as encoding the terms first and
/// framing them with `encode`, for every header form (pass-through, the
/// normal header, fragments).
#[test]
fn encode_terms_matches_encode() {
    use erlkube_etf::{EncodeOptions, Term};
    let opts = EncodeOptions::utf8_atoms();
    let control = Term::tuple(vec![Term::Integer(6), Term::atom(""), Term::atom("sink")]);
    let small = Term::tuple(vec![Term::atom("hello"), Term::Integer(7)]);
    let big = Term::Binary((0..5000u32).map(|i| i as u8).collect());
    for flags in [DistFlags::MANDATORY_25, DistFlags::DIST_HDR_ATOM_CACHE, HDR] {
        for payload in [None, Some(&small), Some(&big)] {
            let mut a = OutboundEncoder::new(flags);
            let mut b = OutboundEncoder::new(flags);
            a.set_fragment_size(1000);
            b.set_fragment_size(1000);
            let mut ctl = Vec::new();
            erlkube_etf::encode_with(&control, &opts, &mut ctl);
            let pay = payload.map(|p| {
                let mut v = Vec::new();
                erlkube_etf::encode_with(p, &opts, &mut v);
                v
            });
            let mut want = vec![9];
            let n1 = a.encode(&ctl, pay.as_deref(), &mut want);
            let mut got = vec![9];
            let n2 = b.encode_terms(&control, payload, &mut got);
            assert_eq!(n1, n2);
            assert_eq!(got, want, "flags {flags:?}, payload {payload:?}");
        }
    }
}

/// Messages whose atoms go through the outbound atom cache decode, on a
/// receiving `InboundDecoder`, to the same terms as written plainly: new
/// entries, cached ones, a slot taken over by another atom, long atom
/// text, and a fragmented message.
#[test]
fn outbound_atom_cache_round_trips() {
    use erlkube_etf::{Atom, Term};
    let mut enc = OutboundEncoder::new(HDR);
    enc.set_fragment_size(100);
    assert!(enc.atom_cache_enabled());
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    let long = "é".repeat(200); // 400 bytes: the long-atoms form
    let names = ["sink", "", "other", long.as_str(), "sink", "other"];
    let mut frames = Vec::new();
    let mut want = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let a = Atom::new(name);
        let b = Atom::new(&format!("n{}", k % 2));
        let payload = Term::binary(vec![k as u8; if k == 3 { 500 } else { 3 }]);
        // Control: {A, B}, both as atom cache references.
        enc.encode_parts_cached(
            &mut frames,
            &[&a, &b],
            |o, refs| {
                assert!(refs);
                o.extend_from_slice(&[104, 2, ATOM_CACHE_REF, 0, ATOM_CACHE_REF, 1]);
            },
            Some(|o: &mut Vec<u8>| {
                erlkube_etf::encode_body_into(
                    &payload,
                    &erlkube_etf::EncodeOptions::utf8_atoms(),
                    o,
                )
            }),
        );
        want.push((Term::tuple(vec![Term::Atom(a), Term::Atom(b)]), payload));
    }
    let mut fd = FrameDecoder::new(1 << 20);
    fd.push(&frames);
    let mut got = Vec::new();
    while let Some(f) = fd.next_frame().unwrap() {
        let Frame::Data(body) = f else { panic!("tick") };
        if let Some(m) = dec.decode(body).unwrap() {
            let (c, n) =
                erlkube_etf::decode_body_prefix_with_atom_cache(&m.data, &m.atoms).unwrap();
            let (p, _) =
                erlkube_etf::decode_body_prefix_with_atom_cache(&m.data[n..], &m.atoms).unwrap();
            got.push((c, p));
        }
    }
    assert_eq!(got, want);
}

#[test]
fn outbound_atom_cache_slot_takeover() {
    use erlkube_etf::Atom;
    // Find two atoms sharing a slot.
    let first = Atom::new("a0");
    let slot = cache_slot(first.as_str());
    let second = (1..100_000)
        .map(|i| Atom::new(&format!("a{i}")))
        .find(|a| cache_slot(a.as_str()) == slot)
        .unwrap();
    let mut enc = OutboundEncoder::new(HDR);
    let mut dec = InboundDecoder::new(HDR, Limits::default());
    let mut frames = Vec::new();
    for a in [&first, &second, &first, &first, &second] {
        enc.encode_parts_cached(
            &mut frames,
            &[a],
            |o, _| o.extend_from_slice(&[ATOM_CACHE_REF, 0]),
            None::<fn(&mut Vec<u8>)>,
        );
    }
    let mut fd = FrameDecoder::new(1 << 20);
    fd.push(&frames);
    let mut got = Vec::new();
    while let Some(Frame::Data(body)) = fd.next_frame().unwrap() {
        let m = dec.decode(body).unwrap().unwrap();
        got.push(
            erlkube_etf::decode_body_prefix_with_atom_cache(&m.data, &m.atoms)
                .unwrap()
                .0,
        );
    }
    let want: Vec<_> = [&first, &second, &first, &first, &second]
        .iter()
        .map(|a| erlkube_etf::Term::Atom((*a).clone()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn outbound_atom_cache_off_without_the_flag() {
    use erlkube_etf::Atom;
    let mut enc = OutboundEncoder::new(DistFlags::FRAGMENTS);
    assert!(!enc.atom_cache_enabled());
    let mut out = Vec::new();
    let a = Atom::new("x");
    enc.encode_parts_cached(
        &mut out,
        &[&a],
        |o, refs| {
            assert!(!refs);
            o.extend_from_slice(&[119, 1, b'x']);
        },
        None::<fn(&mut Vec<u8>)>,
    );
    assert_eq!(out, vec![0, 0, 0, 6, 131, b'D', 0, 119, 1, b'x']);
}
