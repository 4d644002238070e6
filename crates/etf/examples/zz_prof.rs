use erlkube_etf::*;
fn main() {
    let small = parse(r#"{ok, [1,2,3], <<"hello">>, #{a => 1}, 'atom', 3.14}"#).unwrap();
    let medium = Term::List((0..40).map(|i| parse(&format!(r#"#{{id => {i}, name => <<"user-{i}">>, role => admin, score => {}.5, tags => [alpha, beta], node => 'n{i}@host', seen => {}}}"#, i * 7, 1_600_000_000_000i64 + i)).unwrap()).collect());
    let which = std::env::args().nth(1).unwrap();
    let t = if which == "small" { small } else { medium };
    let b = encode(&t);
    let et = eetf::Term::decode(&b[..]).unwrap();
    let mut buf = Vec::with_capacity(100000);
    for mode in std::env::args().skip(2) {
        let n = if which == "small" { 3_000_000 } else { 30_000 };
        let start = std::time::Instant::now();
        for _ in 0..n {
            match mode.as_str() {
                "alloc" => {
                    let v: Vec<u64> = Vec::with_capacity(std::hint::black_box(40));
                    std::hint::black_box(&v);
                }
                "empty" => {
                    std::hint::black_box(
                        decode_ref(std::hint::black_box(&[131u8, 97, 1][..])).unwrap(),
                    );
                }
                "tup" => {
                    std::hint::black_box(
                        decode_ref(std::hint::black_box(&[131u8, 104, 2, 97, 1, 97, 2][..]))
                            .unwrap(),
                    );
                }
                "tup0" => {
                    std::hint::black_box(
                        decode_ref(std::hint::black_box(&[131u8, 104, 0][..])).unwrap(),
                    );
                }
                "tup1" => {
                    std::hint::black_box(
                        decode_ref(std::hint::black_box(&[131u8, 104, 1, 97, 1][..])).unwrap(),
                    );
                }
                "tup4" => {
                    std::hint::black_box(
                        decode_ref(std::hint::black_box(
                            &[131u8, 104, 4, 97, 1, 97, 2, 97, 3, 97, 4][..],
                        ))
                        .unwrap(),
                    );
                }
                "etup4" => {
                    std::hint::black_box(
                        eetf::Term::decode(std::hint::black_box(
                            &[131u8, 104, 4, 97, 1, 97, 2, 97, 3, 97, 4][..],
                        ))
                        .unwrap(),
                    );
                }
                "ref" => {
                    std::hint::black_box(decode_ref(std::hint::black_box(&b)).unwrap());
                }
                "eetf" => {
                    std::hint::black_box(eetf::Term::decode(std::hint::black_box(&b[..])).unwrap());
                }
                "enc" => {
                    buf.clear();
                    encode_into(std::hint::black_box(&t), &mut buf);
                    std::hint::black_box(&buf);
                }
                "eenc" => {
                    buf.clear();
                    std::hint::black_box(&et).encode(&mut buf).unwrap();
                    std::hint::black_box(&buf);
                }
                _ => {}
            }
        }
        println!("{} {:?}", mode, start.elapsed() / n);
    }
}
#[allow(dead_code)]
fn unused() {}
