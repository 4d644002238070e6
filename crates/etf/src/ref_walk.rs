//! `Drop`, `Clone`, `Debug` and `==` for the borrowed tree ([`TermRef`]),
//! for any nesting depth: each recurses over the first
//! [`RECURSION_DEPTH`] levels (what real terms use) and continues deeper
//! levels from an explicit stack on the heap (`Debug` uses one
//! throughout), so a term a million levels deep costs no thread stack.

use std::fmt;

use crate::decode::{FunRef, TermRef, RECURSION_DEPTH};

/// The elements of a container in order (a map's keys and values
/// alternating, an improper list's tail last, a fun's free variables).
pub(crate) fn element<'r, 'a>(t: &'r TermRef<'a>, i: usize) -> Option<&'r TermRef<'a>> {
    match t {
        TermRef::Tuple(v) | TermRef::List(v) => v.get(i),
        TermRef::ImproperList { elems, tail } => {
            elems.get(i).or((i == elems.len()).then_some(&**tail))
        }
        TermRef::Map(m) => m
            .get(i / 2)
            .map(|(k, v)| if i.is_multiple_of(2) { k } else { v }),
        TermRef::Fun(f) => f.free_vars.get(i),
        _ => None,
    }
}

/// How many elements [`element`] lists.
pub(crate) fn element_count(t: &TermRef<'_>) -> usize {
    match t {
        TermRef::Tuple(v) | TermRef::List(v) => v.len(),
        TermRef::ImproperList { elems, .. } => elems.len() + 1,
        TermRef::Map(m) => 2 * m.len(),
        TermRef::Fun(f) => f.free_vars.len(),
        _ => 0,
    }
}

fn is_container(t: &TermRef<'_>) -> bool {
    matches!(
        t,
        TermRef::Tuple(_)
            | TermRef::List(_)
            | TermRef::ImproperList { .. }
            | TermRef::Map(_)
            | TermRef::Fun(_)
    )
}

// ---------------------------------------------------------------- Drop

thread_local! {
    /// Containers of this thread being dropped inside each other.
    static DROP_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Dropping a term never recurses deeper than [`RECURSION_DEPTH`]
/// levels: below that, elements are freed from an explicit stack on the
/// heap. Shallower terms are dropped as the drop glue would, with a
/// per-thread depth count around each non-empty container.
impl Drop for TermRef<'_> {
    #[inline]
    fn drop(&mut self) {
        if element_count(self) == 0 {
            return;
        }
        let depth = DROP_DEPTH.with(|d| d.get());
        if depth >= RECURSION_DEPTH {
            return empty_deep(self);
        }
        DROP_DEPTH.with(|d| d.set(depth + 1));
        clear(self);
        DROP_DEPTH.with(|d| d.set(depth));
    }
}

/// Drops `t`'s elements in place (the containers keep their buffers,
/// which the drop glue frees).
#[inline]
fn clear(t: &mut TermRef<'_>) {
    match t {
        TermRef::Tuple(v) | TermRef::List(v) => clear_terms(v),
        TermRef::ImproperList { elems, tail } => {
            clear_terms(elems);
            **tail = TermRef::Integer(0);
        }
        TermRef::Map(m) => clear_entries(m),
        TermRef::Fun(f) => f.free_vars.clear(),
        _ => {}
    }
}

/// Drops one element of a vector being cleared: the variants that own
/// nothing (they borrow the input) are skipped, an atom drops its text,
/// only the others go through the drop glue (a call per element).
///
/// # Safety
///
/// `e` points at an initialised `TermRef` that is never used again.
#[inline(always)]
unsafe fn drop_element(e: *mut TermRef<'_>) {
    // SAFETY: as the caller promises; each arm drops the field it names
    // (or the whole term) exactly once, or nothing for variants without
    // owned fields.
    unsafe {
        match &mut *e {
            TermRef::Integer(_)
            | TermRef::Float(_)
            | TermRef::Binary(_)
            | TermRef::ByteList(_)
            | TermRef::BigInt { .. }
            | TermRef::BitBinary { .. } => {}
            TermRef::Atom(a) => std::ptr::drop_in_place(a),
            _ => std::ptr::drop_in_place(e),
        }
    }
}

/// `v.clear()` with the elements dropped by [`drop_element`].
#[inline]
fn clear_terms(v: &mut Vec<TermRef<'_>>) {
    let len = v.len();
    let p = v.as_mut_ptr();
    // SAFETY: the length is set to 0 first, so the elements, dropped
    // below exactly once each, are never reached through `v` again;
    // `p.add(i)` for `i < len` points at an initialised element.
    unsafe {
        v.set_len(0);
        for i in 0..len {
            drop_element(p.add(i));
        }
    }
}

/// [`clear_terms`] for a map's entries.
#[inline]
fn clear_entries(v: &mut Vec<(TermRef<'_>, TermRef<'_>)>) {
    let len = v.len();
    let p = v.as_mut_ptr();
    // SAFETY: as in `clear_terms`, for each entry's key and value.
    unsafe {
        v.set_len(0);
        for i in 0..len {
            let e = p.add(i);
            drop_element(&raw mut (*e).0);
            drop_element(&raw mut (*e).1);
        }
    }
}

/// Moves `t`'s elements that have elements of their own to `out` and
/// drops the others (which nest nothing), leaving `t` without any.
fn detach<'a>(t: &mut TermRef<'a>, out: &mut Vec<TermRef<'a>>) {
    let mut keep = |c: TermRef<'a>| {
        if element_count(&c) > 0 {
            out.push(c);
        }
    };
    match t {
        TermRef::Tuple(v) | TermRef::List(v) => v.drain(..).for_each(keep),
        TermRef::ImproperList { elems, tail } => {
            elems.drain(..).for_each(&mut keep);
            keep(std::mem::replace(&mut **tail, TermRef::Integer(0)));
        }
        TermRef::Map(m) => {
            for (k, v) in m.drain(..) {
                keep(k);
                keep(v);
            }
        }
        TermRef::Fun(f) => f.free_vars.drain(..).for_each(keep),
        _ => {}
    }
}

#[cold]
#[inline(never)]
fn empty_deep(t: &mut TermRef<'_>) {
    let mut pending = Vec::new();
    detach(t, &mut pending);
    while let Some(mut c) = pending.pop() {
        detach(&mut c, &mut pending);
    }
}

// ---------------------------------------------------------------- Clone

impl Clone for TermRef<'_> {
    #[inline]
    fn clone(&self) -> Self {
        clone_at(self, 0)
    }
}

/// A term without elements (a scalar, or an empty container).
fn clone_leaf<'a>(t: &TermRef<'a>) -> TermRef<'a> {
    match t {
        TermRef::Integer(i) => TermRef::Integer(*i),
        TermRef::BigInt {
            negative,
            magnitude,
        } => TermRef::BigInt {
            negative: *negative,
            magnitude,
        },
        TermRef::Float(f) => TermRef::Float(*f),
        TermRef::Atom(a) => TermRef::Atom(a.clone()),
        TermRef::Binary(b) => TermRef::Binary(b),
        TermRef::BitBinary { bytes, bits } => TermRef::BitBinary { bytes, bits: *bits },
        TermRef::ByteList(b) => TermRef::ByteList(b),
        TermRef::Pid {
            node,
            id,
            serial,
            creation,
        } => TermRef::Pid {
            node: node.clone(),
            id: *id,
            serial: *serial,
            creation: *creation,
        },
        TermRef::Port { node, id, creation } => TermRef::Port {
            node: node.clone(),
            id: *id,
            creation: *creation,
        },
        TermRef::Reference {
            node,
            creation,
            len,
            ids,
        } => TermRef::Reference {
            node: node.clone(),
            creation: *creation,
            len: *len,
            ids: *ids,
        },
        TermRef::Export {
            module,
            function,
            arity,
        } => TermRef::Export {
            module: module.clone(),
            function: function.clone(),
            arity: *arity,
        },
        other => rebuild(other, Vec::new()),
    }
}

/// Clones `t`, which is at nesting `depth` of the clone under way.
fn clone_at<'a>(t: &TermRef<'a>, depth: usize) -> TermRef<'a> {
    if !is_container(t) {
        return clone_leaf(t);
    }
    if depth >= RECURSION_DEPTH {
        return clone_deep(t);
    }
    let n = element_count(t);
    let elems = (0..n)
        .filter_map(|i| element(t, i))
        .map(|e| clone_at(e, depth + 1))
        .collect();
    rebuild(t, elems)
}

/// A container like `src` with the elements `elems` (as [`element`]
/// lists them).
fn rebuild<'a>(src: &TermRef<'a>, mut elems: Vec<TermRef<'a>>) -> TermRef<'a> {
    match src {
        TermRef::Tuple(_) => TermRef::Tuple(elems),
        TermRef::List(_) => TermRef::List(elems),
        TermRef::ImproperList { .. } => {
            let tail = elems.pop().unwrap_or(TermRef::Integer(0));
            TermRef::ImproperList {
                elems,
                tail: Box::new(tail),
            }
        }
        TermRef::Map(_) => {
            let mut entries = Vec::with_capacity(elems.len() / 2);
            let mut it = elems.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                entries.push((k, v));
            }
            TermRef::Map(entries)
        }
        TermRef::Fun(f) => TermRef::Fun(Box::new(FunRef {
            arity: f.arity,
            uniq: f.uniq,
            index: f.index,
            module: f.module.clone(),
            old_index: f.old_index,
            old_uniq: f.old_uniq,
            pid: clone_leaf(&f.pid),
            free_vars: elems,
        })),
        other => clone_leaf(other),
    }
}

#[cold]
#[inline(never)]
fn clone_deep<'a>(root: &TermRef<'a>) -> TermRef<'a> {
    let mut stack: Vec<(&TermRef<'a>, usize, Vec<TermRef<'a>>)> =
        vec![(root, 0, Vec::with_capacity(element_count(root)))];
    loop {
        let Some(top) = stack.last_mut() else {
            return TermRef::Integer(0);
        };
        if let Some(e) = element(top.0, top.1) {
            top.1 += 1;
            if element_count(e) > 0 {
                stack.push((e, 0, Vec::with_capacity(element_count(e))));
            } else {
                top.2.push(clone_leaf(e));
            }
            continue;
        }
        let Some((src, _, elems)) = stack.pop() else {
            return TermRef::Integer(0);
        };
        let t = rebuild(src, elems);
        match stack.last_mut() {
            Some(parent) => parent.2.push(t),
            None => return t,
        }
    }
}

// ---------------------------------------------------------------- ==

/// Structural equality (map entries in wire order, as the derived form
/// compared them).
impl PartialEq for TermRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        eq_at(self, other, 0)
    }
}

impl PartialEq for FunRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        fun_head_eq(self, other)
            && self
                .free_vars
                .iter()
                .zip(&other.free_vars)
                .all(|(a, b)| eq_at(a, b, 1))
    }
}

/// Everything of two funs but their free variables' contents.
fn fun_head_eq(a: &FunRef<'_>, b: &FunRef<'_>) -> bool {
    a.arity == b.arity
        && a.uniq == b.uniq
        && a.index == b.index
        && a.module == b.module
        && a.old_index == b.old_index
        && a.old_uniq == b.old_uniq
        && head_eq(&a.pid, &b.pid)
        && a.free_vars.len() == b.free_vars.len()
}

/// Same variant, same fields apart from elements, same element count.
fn head_eq(a: &TermRef<'_>, b: &TermRef<'_>) -> bool {
    use TermRef::*;
    match (a, b) {
        (Integer(x), Integer(y)) => x == y,
        (
            BigInt {
                negative: n1,
                magnitude: m1,
            },
            BigInt {
                negative: n2,
                magnitude: m2,
            },
        ) => n1 == n2 && m1 == m2,
        (Float(x), Float(y)) => x == y,
        (Atom(x), Atom(y)) => x == y,
        (Binary(x), Binary(y)) => x == y,
        (
            BitBinary {
                bytes: b1,
                bits: t1,
            },
            BitBinary {
                bytes: b2,
                bits: t2,
            },
        ) => b1 == b2 && t1 == t2,
        (ByteList(x), ByteList(y)) => x == y,
        (Tuple(x), Tuple(y)) | (List(x), List(y)) => x.len() == y.len(),
        (ImproperList { elems: x, .. }, ImproperList { elems: y, .. }) => x.len() == y.len(),
        (Map(x), Map(y)) => x.len() == y.len(),
        (
            Pid {
                node: n1,
                id: i1,
                serial: s1,
                creation: c1,
            },
            Pid {
                node: n2,
                id: i2,
                serial: s2,
                creation: c2,
            },
        ) => n1 == n2 && i1 == i2 && s1 == s2 && c1 == c2,
        (
            Port {
                node: n1,
                id: i1,
                creation: c1,
            },
            Port {
                node: n2,
                id: i2,
                creation: c2,
            },
        ) => n1 == n2 && i1 == i2 && c1 == c2,
        (
            Reference {
                node: n1,
                creation: c1,
                len: l1,
                ids: d1,
            },
            Reference {
                node: n2,
                creation: c2,
                len: l2,
                ids: d2,
            },
        ) => n1 == n2 && c1 == c2 && l1 == l2 && d1 == d2,
        (
            Export {
                module: m1,
                function: f1,
                arity: a1,
            },
            Export {
                module: m2,
                function: f2,
                arity: a2,
            },
        ) => m1 == m2 && f1 == f2 && a1 == a2,
        (Fun(x), Fun(y)) => fun_head_eq(x, y),
        _ => false,
    }
}

fn eq_at(a: &TermRef<'_>, b: &TermRef<'_>, depth: usize) -> bool {
    if !head_eq(a, b) {
        return false;
    }
    let n = element_count(a);
    if n == 0 {
        return true;
    }
    if depth >= RECURSION_DEPTH {
        return eq_deep(a, b);
    }
    (0..n).all(|i| match (element(a, i), element(b, i)) {
        (Some(x), Some(y)) => eq_at(x, y, depth + 1),
        _ => false,
    })
}

#[cold]
#[inline(never)]
fn eq_deep(a: &TermRef<'_>, b: &TermRef<'_>) -> bool {
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        if !head_eq(a, b) {
            return false;
        }
        for i in (0..element_count(a)).rev() {
            match (element(a, i), element(b, i)) {
                (Some(x), Some(y)) => stack.push((x, y)),
                _ => return false,
            }
        }
    }
    true
}

// ---------------------------------------------------------------- Debug

/// The derived form (`Tuple([Integer(1), Atom(AtomRef("a"))])`), written
/// from an explicit stack.
impl fmt::Debug for TermRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        enum Dbg<'r, 'a> {
            Term(&'r TermRef<'a>),
            Text(&'static str),
        }
        fn seq<'r, 'a>(stack: &mut Vec<Dbg<'r, 'a>>, items: &'r [TermRef<'a>]) {
            for (i, e) in items.iter().enumerate().rev() {
                stack.push(Dbg::Term(e));
                if i > 0 {
                    stack.push(Dbg::Text(", "));
                }
            }
        }
        let mut stack = vec![Dbg::Term(self)];
        while let Some(d) = stack.pop() {
            let t = match d {
                Dbg::Text(s) => {
                    f.write_str(s)?;
                    continue;
                }
                Dbg::Term(t) => t,
            };
            match t {
                TermRef::Integer(i) => write!(f, "Integer({i:?})")?,
                TermRef::BigInt {
                    negative,
                    magnitude,
                } => write!(
                    f,
                    "BigInt {{ negative: {negative:?}, magnitude: {magnitude:?} }}"
                )?,
                TermRef::Float(x) => write!(f, "Float({x:?})")?,
                TermRef::Atom(a) => write!(f, "Atom({a:?})")?,
                TermRef::Binary(b) => write!(f, "Binary({b:?})")?,
                TermRef::BitBinary { bytes, bits } => {
                    write!(f, "BitBinary {{ bytes: {bytes:?}, bits: {bits:?} }}")?
                }
                TermRef::ByteList(b) => write!(f, "ByteList({b:?})")?,
                TermRef::Tuple(v) => {
                    f.write_str("Tuple([")?;
                    stack.push(Dbg::Text("])"));
                    seq(&mut stack, v);
                }
                TermRef::List(v) => {
                    f.write_str("List([")?;
                    stack.push(Dbg::Text("])"));
                    seq(&mut stack, v);
                }
                TermRef::ImproperList { elems, tail } => {
                    f.write_str("ImproperList { elems: [")?;
                    stack.push(Dbg::Text(" }"));
                    stack.push(Dbg::Term(tail));
                    stack.push(Dbg::Text("], tail: "));
                    seq(&mut stack, elems);
                }
                TermRef::Map(m) => {
                    f.write_str("Map([")?;
                    stack.push(Dbg::Text("])"));
                    for (i, (k, v)) in m.iter().enumerate().rev() {
                        stack.push(Dbg::Text(")"));
                        stack.push(Dbg::Term(v));
                        stack.push(Dbg::Text(", "));
                        stack.push(Dbg::Term(k));
                        stack.push(Dbg::Text("("));
                        if i > 0 {
                            stack.push(Dbg::Text(", "));
                        }
                    }
                }
                TermRef::Pid {
                    node,
                    id,
                    serial,
                    creation,
                } => write!(
                    f,
                    "Pid {{ node: {node:?}, id: {id:?}, serial: {serial:?}, creation: {creation:?} }}"
                )?,
                TermRef::Port { node, id, creation } => write!(
                    f,
                    "Port {{ node: {node:?}, id: {id:?}, creation: {creation:?} }}"
                )?,
                TermRef::Reference {
                    node,
                    creation,
                    len,
                    ids,
                } => write!(
                    f,
                    "Reference {{ node: {node:?}, creation: {creation:?}, len: {len:?}, ids: {ids:?} }}"
                )?,
                TermRef::Export {
                    module,
                    function,
                    arity,
                } => write!(
                    f,
                    "Export {{ module: {module:?}, function: {function:?}, arity: {arity:?} }}"
                )?,
                TermRef::Fun(x) => {
                    write!(
                        f,
                        "Fun(FunRef {{ arity: {:?}, uniq: {:?}, index: {:?}, module: {:?}, \
                         old_index: {:?}, old_uniq: {:?}, pid: ",
                        x.arity, x.uniq, x.index, x.module, x.old_index, x.old_uniq
                    )?;
                    stack.push(Dbg::Text("] })"));
                    seq(&mut stack, &x.free_vars);
                    stack.push(Dbg::Text(", free_vars: ["));
                    stack.push(Dbg::Term(&x.pid));
                }
            }
        }
        Ok(())
    }
}
