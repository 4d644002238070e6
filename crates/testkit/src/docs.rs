//! Checking Kubernetes objects that docs and generators print.

use serde_json::Value;

/// The bodies of a Markdown text's fenced code blocks tagged `lang`
/// (e.g. the ```` ```yaml ```` blocks of a doc), in order.
pub fn code_blocks(md: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l == open => cur = Some(String::new()),
            (Some(_), "```") => out.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// `doc` as the typed object `T` (a `k8s-openapi` type), panicking when it
/// is not one or when a field is lost on the way back (an unknown or
/// misspelled field). `apiVersion` and `kind` are left out of the
/// comparison: the typed objects do not serialise them.
pub fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("not a valid object: {e}\n{doc:#}"));
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        v
    };
    let back = serde_json::to_value(&typed).expect("a typed object serialises");
    assert_eq!(
        strip(back),
        strip(doc.clone()),
        "fields lost in the round trip (unknown or misspelled)"
    );
    typed
}
