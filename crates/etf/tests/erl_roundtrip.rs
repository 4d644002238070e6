//! Property test against the real BEAM: random terms are encoded here,
//! decoded by `binary_to_term/1` in one long-lived `erl` process, encoded
//! again by `term_to_binary/1` and decoded here; the result must equal the
//! original, and for canonical terms (no map above 32 keys) erl's bytes must
//! equal ours. Fails if `erl` is missing.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use erlkube_etf::{
    decode, encode, encode_with, Atom, BigInt, EncodeOptions, Map, Pid, Port, Reference, Term,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const ERL_LOOP: &str = r#"
P = open_port({fd, 0, 1}, [{packet, 4}, binary, eof]),
Loop = fun L() ->
    receive
        {P, {data, <<Mode, B/binary>>}} ->
            Out = try binary_to_term(B) of
                      T when Mode =:= 0 -> <<1, (term_to_binary(T))/binary>>;
                      T when Mode =:= 1 -> <<1, (term_to_binary(lists:sort(T)))/binary>>;
                      T when Mode =:= 2 ->
                          Texts = [iolist_to_binary(io_lib:format("~p", [F])) || F <- T],
                          <<1, (term_to_binary(Texts))/binary>>
                  catch C:E -> <<0, (iolist_to_binary(io_lib:format("~p:~p", [C, E])))/binary>>
                  end,
            port_command(P, Out),
            L();
        {P, eof} -> halt(0)
    end
end,
Loop().
"#;

/// One `erl` process; killed on drop.
struct Erl {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Erl {
    fn spawn() -> Erl {
        let mut child = Command::new("erl")
            .args(["-noinput", "-eval", ERL_LOOP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("erl must be installed (tests use the real BEAM)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Erl {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends ETF bytes; returns term_to_binary(binary_to_term(bytes)).
    fn roundtrip(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.call(0, bytes)
    }

    /// Sends an encoded list; returns term_to_binary(lists:sort(List)).
    fn sort(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.call(1, bytes)
    }

    /// Sends an encoded list of floats; returns how `~p` prints each.
    fn print_floats(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.call(2, bytes)
    }

    fn call(&mut self, mode: u8, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.stdin
            .write_all(&(bytes.len() as u32 + 1).to_be_bytes())
            .unwrap();
        self.stdin.write_all(&[mode]).unwrap();
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).expect("erl reply");
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stdout.read_exact(&mut buf).expect("erl reply");
        match buf.first() {
            Some(1) => Ok(buf[1..].to_vec()),
            _ => Err(String::from_utf8_lossy(&buf[1..]).into_owned()),
        }
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn arb_atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        4 => "[a-z][a-zA-Z0-9_@]{0,12}",
        1 => "[ -~]{0,20}",
        1 => "[\u{a0}-\u{ff}a-z]{0,20}",
        1 => "[\u{100}-\u{3ff}\u{4e00}-\u{4e20}a-z]{0,10}",
        1 => Just("a".repeat(255)),
    ]
    .prop_map(|s: String| Atom::new(&s))
}

fn arb_node() -> impl Strategy<Value = Atom> {
    "[a-z]{1,8}@[a-z]{1,8}".prop_map(|s: String| Atom::new(&s))
}

fn arb_bigint() -> impl Strategy<Value = Term> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 9..300)).prop_map(|(neg, mag)| {
        let sign = if neg {
            num_bigint::Sign::Minus
        } else {
            num_bigint::Sign::Plus
        };
        Term::from_bigint(BigInt::from_bytes_le(sign, &mag))
    })
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        3 => (0i64..256).prop_map(Term::Integer),
        2 => any::<i32>().prop_map(|i| Term::Integer(i.into())),
        2 => any::<i64>().prop_map(Term::Integer),
        1 => arb_bigint(),
        2 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Term::Float),
        1 => prop_oneof![Just(0.0), Just(-0.0), Just(1.0e10), Just(0.1), Just(5e-324)].prop_map(Term::Float),
        3 => arb_atom().prop_map(Term::Atom),
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Term::binary),
        1 => (prop::collection::vec(any::<u8>(), 1..10), 1u8..8).prop_map(|(mut bytes, bits)| {
            let last = bytes.last_mut().unwrap();
            *last &= !(0xffu8 >> bits);
            Term::BitBinary { bytes, bits }
        }),
        1 => prop::collection::vec(any::<u8>(), 1..30)
            .prop_map(|b| Term::List(b.into_iter().map(|x| Term::Integer(x.into())).collect())),
        1 => Just(Term::nil()),
        1 => (arb_node(), 0u32..(1 << 15), 0u32..(1 << 13), any::<u32>())
            .prop_map(|(node, id, serial, creation)| Term::Pid(Pid { node, id, serial, creation })),
        1 => (arb_node(), prop_oneof![0u64..(1 << 28), (1u64 << 32)..(1u64 << 60)], any::<u32>())
            .prop_map(|(node, id, creation)| Term::Port(Port { node, id, creation })),
        1 => (arb_node(), any::<u32>(), 0u32..(1 << 18), prop::collection::vec(any::<u32>(), 0..4))
            .prop_map(|(node, creation, first, rest)| {
                let mut ids = vec![first];
                ids.extend(rest);
                Term::from(Reference { node, creation, ids })
            }),
        1 => (arb_atom(), arb_atom(), any::<u8>())
            .prop_map(|(module, function, arity)| Term::Export { module, function, arity }),
    ]
}

fn arb_term() -> impl Strategy<Value = Term> {
    arb_leaf().prop_recursive(5, 200, 12, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..8).prop_map(Term::Tuple),
            3 => prop::collection::vec(inner.clone(), 0..8).prop_map(Term::List),
            1 => (prop::collection::vec(inner.clone(), 1..4), inner.clone())
                .prop_map(|(elems, mut tail)| match &mut tail {
                    Term::List(rest) => {
                        let mut e = elems;
                        e.append(rest);
                        Term::List(e)
                    }
                    Term::ImproperList { elems: e2, tail } => {
                        let mut e = elems;
                        e.append(e2);
                        let tail = std::mem::replace(tail, Box::new(Term::nil()));
                        Term::ImproperList { elems: e, tail }
                    }
                    _ => Term::ImproperList { elems, tail: Box::new(tail) },
                }),
            2 => prop::collection::vec((inner.clone(), inner.clone()), 0..10)
                .prop_map(|kv| Term::Map(kv.into_iter().collect::<Map>())),
            1 => prop::collection::vec((arb_leaf(), inner.clone()), 33..45)
                .prop_map(|kv| Term::Map(kv.into_iter().collect::<Map>())),
        ]
    })
}

fn has_large_map(t: &Term) -> bool {
    match t {
        Term::Map(m) => m.len() > 32 || m.iter().any(|(k, v)| has_large_map(k) || has_large_map(v)),
        Term::Tuple(v) | Term::List(v) => v.iter().any(has_large_map),
        Term::ImproperList { elems, tail } => {
            elems.iter().any(has_large_map) || has_large_map(tail)
        }
        _ => false,
    }
}

#[test]
fn random_terms_round_trip_through_erl() {
    let erl = RefCell::new(Erl::spawn());
    let mut runner = TestRunner::new(Config {
        cases: 5000,
        failure_persistence: None,
        ..Config::default()
    });
    let count = RefCell::new(0usize);
    runner
        .run(&(arb_term(), any::<bool>()), |(t, utf8)| {
            *count.borrow_mut() += 1;
            let mut ours = Vec::new();
            let opts = if utf8 {
                EncodeOptions::utf8_atoms()
            } else {
                EncodeOptions::default()
            };
            encode_with(&t, &opts, &mut ours);
            let theirs = erl
                .borrow_mut()
                .roundtrip(&ours)
                .map_err(|e| TestCaseError::fail(format!("erl rejected {t}: {e}")))?;
            let back = decode(&theirs)
                .map_err(|e| TestCaseError::fail(format!("decoding erl's bytes: {e}")))?;
            prop_assert_eq!(&back, &t);
            if !has_large_map(&t) {
                prop_assert_eq!(
                    &theirs,
                    &encode(&t),
                    "not byte-equal to term_to_binary/1: {}",
                    t
                );
            }
            Ok(())
        })
        .unwrap();
    assert!(*count.borrow() >= 5000);
}

#[test]
fn term_order_matches_lists_sort() {
    let erl = RefCell::new(Erl::spawn());
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(arb_term(), 0..12), |v| {
            let list = Term::List(v.clone());
            let theirs = erl
                .borrow_mut()
                .sort(&encode(&list))
                .map_err(|e| TestCaseError::fail(format!("erl rejected {list}: {e}")))?;
            let theirs = decode(&theirs).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut ours = v;
            ours.sort_by(|a, b| a.cmp_term(b)); // stable, like lists:sort
            prop_assert_eq!(&theirs, &Term::List(ours));
            Ok(())
        })
        .unwrap();
}

#[test]
fn floats_print_like_erl() {
    let erl = RefCell::new(Erl::spawn());
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let float = prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        (-1.0e25f64..1.0e25),
        (-1.0e-3f64..1.0e-3),
        (-100_000i64..100_000).prop_map(|i| i as f64 / 8.0),
    ]
    .prop_filter("finite", |f| f.is_finite());
    runner
        .run(&prop::collection::vec(float, 50), |v| {
            let list = Term::List(v.iter().map(|f| Term::Float(*f)).collect());
            let theirs = erl
                .borrow_mut()
                .print_floats(&encode(&list))
                .map_err(TestCaseError::fail)?;
            let theirs = decode(&theirs).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (f, t) in v.iter().zip(theirs.as_list().unwrap_or(&[])) {
                let text = std::str::from_utf8(t.as_binary().unwrap_or(b"?")).unwrap_or("?");
                prop_assert_eq!(Term::Float(*f).to_string(), text, "{:e}", f);
                prop_assert_eq!(erlkube_etf::parse(text).ok(), Some(Term::Float(*f)));
            }
            Ok(())
        })
        .unwrap();
}
