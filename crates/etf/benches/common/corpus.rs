//! The codec bench's corpus, shared by the bench and the profiling
//! examples (included with `#[path]`), so all of them decode the same terms.

use erlkube_etf::{parse, Term};

/// (name, term): small, medium, large tuples, large binary.
pub fn corpus() -> Vec<(&'static str, Term)> {
    let small =
        parse(r#"{ok, [1,2,3], <<"hello">>, #{a => 1}, 'atom', 3.14}"#).expect("small term");
    // ~3 KB: a list of records as a GenServer reply might carry
    let medium = Term::List(
        (0..40)
            .map(|i| {
                parse(&format!(
                    r#"#{{id => {i}, name => <<"user-{i}">>, role => admin, score => {}.5,
                         tags => [alpha, beta], node => 'n{i}@host', seen => {}}}"#,
                    i * 7,
                    1_600_000_000_000i64 + i
                ))
                .expect("medium term")
            })
            .collect(),
    );
    // ~1 MB: a list of tuples
    let tuples = Term::List(
        (0..40_000)
            .map(|i| {
                Term::Tuple(vec![
                    Term::Integer(i),
                    Term::atom("item"),
                    Term::Binary(format!("v{i}").into_bytes().into()),
                    Term::Float(i as f64 * 0.5),
                ])
            })
            .collect(),
    );
    // ~1 MB: one big binary in a tuple
    let blob = Term::Tuple(vec![
        Term::atom("blob"),
        Term::Binary((0..1_048_576u32).map(|i| (i * 31) as u8).collect()),
    ]);
    vec![
        ("small", small),
        ("medium", medium),
        ("large_tuples", tuples),
        ("large_binary", blob),
    ]
}
