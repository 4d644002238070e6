//! Arbitrary bytes through epmd's request parser (what `erlkube epmd`
//! reads from any client), under the daemon's limit and a small one: no
//! panic; "need more bytes" only for a prefix shorter than its length;
//! any request that decodes re-encodes to bytes that decode to it again.
#![no_main]

use erlkube_proto::epmd::{decode_request, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [MAX_REQUEST_LEN, 16] {
        match decode_request(data, max) {
            Ok(Some((req, used))) => {
                assert!(used >= 3 && used <= data.len());
                let mut out = Vec::new();
                req.encode(&mut out);
                let (again, n) = decode_request(&out, MAX_REQUEST_LEN)
                    .expect("a decoded request re-encodes validly")
                    .expect("whole");
                assert_eq!(again, req);
                assert_eq!(n, out.len());
            }
            Ok(None) => {
                let declared = data
                    .get(..2)
                    .map_or(usize::MAX, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
                assert!(data.len() < 2 || data.len() < 2 + declared);
            }
            Err(_) => {}
        }
    }
});
