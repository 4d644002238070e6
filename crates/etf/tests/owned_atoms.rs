//! The owned decoder takes atoms it has seen before from the thread's atom
//! table without re-checking their bytes. These tests check that a table
//! hit never changes a result: every atom encoding, ASCII, UTF-8, latin-1
//! and invalid bytes, decoded cold and again warm, in both orders, agrees
//! with the borrowed decoder (`decode_ref(..).to_owned()`), including the
//! error and its offset.

use erlkube_etf::{decode, decode_ref, Term};

use erlkube_etf::tags::{ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT};

/// `{Atom, Atom}` in one encoding, version byte first.
fn pair(tag: u8, text: &[u8]) -> Vec<u8> {
    let mut b = vec![131, 104, 2];
    for _ in 0..2 {
        b.push(tag);
        if tag == SMALL_ATOM_UTF8_EXT || tag == SMALL_ATOM_EXT {
            b.push(text.len() as u8);
        } else {
            b.extend_from_slice(&(text.len() as u16).to_be_bytes());
        }
        b.extend_from_slice(text);
    }
    b
}

/// The owned result must equal the borrowed decoder's, error included.
fn agree(input: &[u8]) {
    let owned = decode(input);
    let via_ref = decode_ref(input).map(|t| t.to_owned());
    assert_eq!(owned, via_ref, "input {input:?}");
}

#[test]
fn atom_table_hits_do_not_change_results() {
    let texts: [&[u8]; 8] = [
        b"ok",
        b"",
        "é".as_bytes(), // UTF-8 é, latin-1 "Ã©"
        &[0xe9],        // latin-1 é, invalid UTF-8
        &[0xc3, 0x28],  // invalid UTF-8, latin-1 "Ã("
        "n1@host.example".as_bytes(),
        "字字".as_bytes(),
        &[b'a'; 64], // longest text the table keeps
    ];
    let tags = [SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT, SMALL_ATOM_EXT, ATOM_EXT];
    // every (text, tag) after every other (text, tag): the first warms the
    // table with the text under one encoding, the second reads it in another
    for t1 in texts {
        for g1 in tags {
            for t2 in texts {
                for g2 in tags {
                    agree(&pair(g1, t1));
                    agree(&pair(g2, t2));
                    agree(&pair(g1, t1));
                }
            }
        }
    }
}

#[test]
fn utf8_and_latin1_encodings_of_the_same_bytes_differ() {
    let e = "é".as_bytes();
    let utf8 = decode(&pair(SMALL_ATOM_UTF8_EXT, e)).unwrap();
    let latin1 = decode(&pair(ATOM_EXT, e)).unwrap();
    let utf8_again = decode(&pair(SMALL_ATOM_UTF8_EXT, e)).unwrap();
    assert_eq!(utf8, Term::tuple(vec![Term::atom("é"), Term::atom("é")]));
    assert_eq!(
        latin1,
        Term::tuple(vec![Term::atom("Ã©"), Term::atom("Ã©")])
    );
    assert_eq!(utf8_again, utf8);
}

#[test]
fn invalid_utf8_is_an_error_even_after_the_latin1_reading_was_seen() {
    let bad = [0xc3, 0x28];
    assert!(decode(&pair(ATOM_EXT, &bad)).is_ok());
    let e = decode(&pair(SMALL_ATOM_UTF8_EXT, &bad)).unwrap_err();
    assert_eq!(e.kind(), erlkube_etf::DecodeErrorKind::InvalidUtf8);
    assert_eq!(e.offset(), 3);
}

#[test]
fn atoms_decoded_on_other_threads_agree() {
    let inputs: Vec<Vec<u8>> = [b"ok".as_slice(), "é".as_bytes(), &[0xe9]]
        .iter()
        .flat_map(|t| [pair(SMALL_ATOM_UTF8_EXT, t), pair(ATOM_EXT, t)])
        .collect();
    let here: Vec<_> = inputs.iter().map(|b| decode(b)).collect();
    let there: Vec<_> = std::thread::spawn(move || inputs.iter().map(|b| decode(b)).collect())
        .join()
        .unwrap();
    assert_eq!(here, there);
}
