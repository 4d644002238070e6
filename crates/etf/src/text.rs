//! Erlang syntax: the printer (`Display for Term`) and the parser
//! ([`parse`]).
//!
//! The printer writes what the shell's `~p` writes on one line (no spaces
//! after commas; printable latin-1 lists as strings, printable binaries as
//! `<<"...">>`; floats in the shortest form that reads back exactly, as
//! `float_to_list(F, [short])`). Atoms with characters beyond latin-1 are
//! written with those characters as they are (like `~tp`, where `~p` would
//! write `\x{...}` escapes); the parser reads both. Map keys are printed in
//! map-key order, the shell's order for maps of up to 32 keys (larger maps
//! print in hash order there).
//!
//! Pids, ports and references carry their node, which the shell's
//! `<0.85.0>` hides, so they print as
//!
//! * `#Pid<Node.Id.Serial.Creation>`, e.g. `#Pid<nonode@nohost.85.0.0>`,
//! * `#Port<Node.Id.Creation>`, e.g. `#Port<'a@host.example'.7.3>`,
//! * `#Ref<Node.Creation.W0.W1...>` with the id words in wire order,
//!
//! where `Node` is an atom (quoted when needed). The parser reads these back,
//! and also accepts the shell's `<A.B.C>` as a pid of `nonode@nohost` with
//! creation 0. Closures print as `#Fun<Module.OldIndex.OldUniq>` like the
//! shell; they cannot be parsed back.

use std::fmt::{self, Write};

use crate::error::ParseError;
use crate::term::{Atom, BigInt, Pid, Port, Reference, Term, MAX_ATOM_CHARS};

const RESERVED: &[&str] = &[
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
    "rem", "try", "when", "xor",
];

fn is_lower(c: char) -> bool {
    c.is_ascii_lowercase() || (('\u{df}'..='\u{ff}').contains(&c) && c != '\u{f7}')
}
fn is_upper(c: char) -> bool {
    c.is_ascii_uppercase() || (('\u{c0}'..='\u{de}').contains(&c) && c != '\u{d7}')
}
fn is_name_char(c: char) -> bool {
    is_lower(c) || is_upper(c) || c.is_ascii_digit() || c == '_' || c == '@'
}

fn atom_needs_quotes(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if is_lower(c) => {}
        _ => return true,
    }
    if !cs.all(is_name_char) {
        return true;
    }
    RESERVED.contains(&s)
}

fn write_escaped_char(f: &mut impl Write, c: char, quote: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\u{b}' => f.write_str("\\v"),
        '\u{8}' => f.write_str("\\b"),
        '\u{c}' => f.write_str("\\f"),
        '\u{1b}' => f.write_str("\\e"),
        '\u{7f}' => f.write_str("\\d"),
        '\\' => f.write_str("\\\\"),
        c if c == quote => write!(f, "\\{c}"),
        c if (c as u32) < 32 => write!(f, "\\^{}", ((c as u8) + 64) as char),
        c if (128..160).contains(&(c as u32)) => write!(f, "\\{:o}", c as u32),
        c => f.write_char(c),
    }
}

pub(crate) fn write_atom(f: &mut impl Write, s: &str) -> fmt::Result {
    if !atom_needs_quotes(s) {
        return f.write_str(s);
    }
    f.write_char('\'')?;
    for c in s.chars() {
        write_escaped_char(f, c, '\'')?;
    }
    f.write_char('\'')
}

fn printable_char(c: u32) -> bool {
    (32..=126).contains(&c) || (160..=255).contains(&c) || (8..=13).contains(&c) || c == 27
}

/// Rust's shortest digits and Erlang's (Ryu) agree except when the float
/// lies exactly halfway between two shortest candidates: Rust rounds the
/// last digit up, Ryu to even. `digits` (no dot) times 10^(exp - len + 1)
/// is Rust's answer for `x` (positive).
fn break_tie_to_even(x: f64, digits: String, exp: i32) -> String {
    let n = digits.len();
    let m: u64 = match digits.parse() {
        Ok(m) if n <= 17 => m,
        _ => return digits,
    };
    if m & 1 == 0 {
        return digits;
    }
    for c in [m - 1, m + 1] {
        let cs = c.to_string();
        if cs.len() != n {
            continue;
        }
        let text = if n == 1 {
            format!("{cs}e{exp}")
        } else {
            format!("{}.{}e{}", &cs[..1], &cs[1..], exp)
        };
        if text.parse::<f64>() != Ok(x) {
            continue;
        }
        // both round-trip: is x exactly their midpoint?
        let mid = format!("{}5", m.min(c));
        let exact = format!("{:.800e}", x);
        let exact_digits: String = exact
            .split('e')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| *c != '.')
            .collect();
        if exact_digits.trim_end_matches('0') == mid {
            return cs;
        }
    }
    digits
}

/// Erlang's shortest float text (`float_to_list(F, [short])`).
pub fn format_float(x: f64) -> String {
    if !x.is_finite() {
        // not an Erlang float (the decoder never produces one); printed as
        // Rust does rather than panicking
        return format!("{x}");
    }
    let sci = format!("{:e}", x);
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let digits = break_tie_to_even(x.abs(), digits, exp);
    let n = digits.len() as i32;
    let sign = if neg { "-" } else { "" };
    let sci_s = format!(
        "{sign}{}.{}e{exp}",
        &digits[..1],
        if n > 1 { &digits[1..] } else { "0" }
    );
    let dec_s = if exp >= 0 {
        if n - 1 <= exp {
            format!("{sign}{digits}{}.0", "0".repeat((exp - (n - 1)) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    };
    if x.abs() >= 9007199254740992.0 || dec_s.len() > sci_s.len() {
        sci_s
    } else {
        dec_s
    }
}

fn write_node_id(f: &mut fmt::Formatter<'_>, kind: &str, node: &Atom, nums: &[u64]) -> fmt::Result {
    write!(f, "#{kind}<")?;
    write_atom(f, node.as_str())?;
    for n in nums {
        write!(f, ".{n}")?;
    }
    f.write_char('>')
}

fn write_bin(f: &mut fmt::Formatter<'_>, bytes: &[u8], bits: u8) -> fmt::Result {
    f.write_str("<<")?;
    if bits == 8 && !bytes.is_empty() && bytes.iter().all(|&b| printable_char(b as u32)) {
        f.write_char('"')?;
        for &b in bytes {
            write_escaped_char(f, b as char, '"')?;
        }
        f.write_char('"')?;
    } else {
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            if i + 1 == bytes.len() && bits != 8 {
                write!(f, "{}:{}", b >> (8 - bits), bits)?;
            } else {
                write!(f, "{b}")?;
            }
        }
    }
    f.write_str(">>")
}

/// `[elems | tail]`: a list tail joins the elements.
fn improper(mut elems: Vec<Term>, mut tail: Term) -> Term {
    match &mut tail {
        Term::List(rest) => {
            elems.append(rest);
            Term::List(elems)
        }
        Term::ImproperList { elems: more, tail } => {
            elems.append(more);
            let tail = std::mem::replace(tail, Box::new(Term::Integer(0)));
            Term::ImproperList { elems, tail }
        }
        _ => Term::ImproperList {
            elems,
            tail: Box::new(tail),
        },
    }
}

/// What the printer has left to write: a term, or punctuation.
enum Print<'t> {
    Term(&'t Term),
    Text(&'static str),
}

/// Pushes `items` (last first) to print with `sep` between them.
fn push_seq<'t>(stack: &mut Vec<Print<'t>>, items: &'t [Term]) {
    for (i, e) in items.iter().enumerate().rev() {
        stack.push(Print::Term(e));
        if i > 0 {
            stack.push(Print::Text(","));
        }
    }
}

/// True for a proper list printed as `"text"`.
fn is_printable_list(v: &[Term]) -> bool {
    !v.is_empty()
        && v.iter().all(
            |e| matches!(e, Term::Integer(i) if printable_char(*i as u32) && *i >= 0 && *i < 256),
        )
}

/// Erlang syntax as the shell's `~p` prints on one line. Containers are
/// printed from an explicit stack (on the heap), so a term of any depth
/// prints without recursion.
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut stack = vec![Print::Term(self)];
        while let Some(p) = stack.pop() {
            let t = match p {
                Print::Text(s) => {
                    f.write_str(s)?;
                    continue;
                }
                Print::Term(t) => t,
            };
            match t {
                Term::Tuple(v) => {
                    f.write_char('{')?;
                    stack.push(Print::Text("}"));
                    push_seq(&mut stack, v);
                }
                Term::List(v) if is_printable_list(v) => {
                    f.write_char('"')?;
                    for e in v {
                        if let Term::Integer(i) = e {
                            write_escaped_char(f, char::from(*i as u8), '"')?;
                        }
                    }
                    f.write_char('"')?;
                }
                Term::List(v) => {
                    f.write_char('[')?;
                    stack.push(Print::Text("]"));
                    push_seq(&mut stack, v);
                }
                Term::ImproperList { elems, tail } => {
                    f.write_char('[')?;
                    stack.push(Print::Text("]"));
                    stack.push(Print::Term(tail));
                    stack.push(Print::Text("|"));
                    push_seq(&mut stack, elems);
                }
                Term::Map(m) => {
                    f.write_str("#{")?;
                    stack.push(Print::Text("}"));
                    let entries = m.sorted_entries();
                    for (i, (k, v)) in entries.into_iter().enumerate().rev() {
                        stack.push(Print::Term(v));
                        stack.push(Print::Text(" => "));
                        stack.push(Print::Term(k));
                        if i > 0 {
                            stack.push(Print::Text(","));
                        }
                    }
                }
                _ => write_scalar(f, t)?,
            }
        }
        Ok(())
    }
}

/// A term without elements (a fun prints without its free variables).
fn write_scalar(f: &mut fmt::Formatter<'_>, t: &Term) -> fmt::Result {
    match t {
        Term::Integer(i) => write!(f, "{i}"),
        Term::BigInt(b) => write!(f, "{b}"),
        Term::Float(x) => f.write_str(&format_float(*x)),
        Term::Atom(a) => write_atom(f, a.as_str()),
        Term::Binary(b) => write_bin(f, b, 8),
        Term::BitBinary { bytes, bits } => write_bin(f, bytes, *bits),
        Term::Pid(p) => write_node_id(
            f,
            "Pid",
            &p.node,
            &[p.id as u64, p.serial as u64, p.creation as u64],
        ),
        Term::Port(p) => write_node_id(f, "Port", &p.node, &[p.id, p.creation as u64]),
        Term::Reference(r) => {
            let mut nums = vec![r.creation as u64];
            nums.extend(r.ids.iter().map(|&i| i as u64));
            write_node_id(f, "Ref", &r.node, &nums)
        }
        Term::Export {
            module,
            function,
            arity,
        } => {
            f.write_str("fun ")?;
            write_atom(f, module.as_str())?;
            f.write_char(':')?;
            write_atom(f, function.as_str())?;
            write!(f, "/{arity}")
        }
        Term::Fun(fun) => {
            f.write_str("#Fun<")?;
            write_atom(f, fun.module.as_str())?;
            write!(f, ".{}.{}>", fun.old_index, fun.old_uniq)
        }
        // containers are printed by `Display`
        Term::Tuple(_) | Term::List(_) | Term::ImproperList { .. } | Term::Map(_) => Ok(()),
    }
}

/// Parses one literal Erlang term, optionally followed by a `.`.
///
/// Accepts integers (with `16#ff` bases, `$a` chars, big values), floats
/// (`2.5`, `1.0e10`), atoms (plain and quoted), `"strings"` (as lists),
/// tuples, lists (with `|` tails), maps `#{K => V}`, binaries with bit syntax
/// (`<<1,2,3:4>>`, `<<"text">>`), `fun m:f/2`, and the pid/port/reference
/// forms written by the printer.
pub fn parse(text: &str) -> Result<Term, ParseError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.ws();
    let t = p.term()?;
    p.ws();
    if p.peek() == Some('.') {
        p.pos += 1;
        p.ws();
    }
    if p.pos != p.chars.len() {
        return Err(p.error("unexpected text after the term"));
    }
    Ok(t)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// A container the parser is inside of.
enum Open {
    Tuple(Vec<Term>),
    List(Vec<Term>),
    /// A list's elements, after the `|`: the tail comes next.
    Tail(Vec<Term>),
    /// Entries so far and the key waiting for `=>` and its value.
    Map(Vec<(Term, Term)>, Option<Term>),
}

impl Parser {
    fn error(&self, msg: &str) -> ParseError {
        self.error_at(self.pos, msg)
    }
    fn error_at(&self, at: usize, msg: &str) -> ParseError {
        let mut line = 1;
        let mut column = 1;
        for &c in &self.chars[..at.min(self.chars.len())] {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        let found = match self.chars.get(at) {
            Some(c) => format!(" (found {c:?})"),
            None => " (found end of input)".to_string(),
        };
        ParseError {
            line,
            column,
            message: format!("{msg}{found}"),
        }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '%' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }
    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {c:?}")))
        }
    }
    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    /// One term. Containers are parsed with an explicit stack of the
    /// open ones (on the heap), so any nesting parses without recursion.
    fn term(&mut self) -> Result<Term, ParseError> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            let mut value = match self.open_or_scalar(&mut stack)? {
                Some(t) => t,
                None => continue,
            };
            // hand the value to the innermost open container, closing
            // those it completes
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                let closed = match top {
                    Open::Tuple(v) => {
                        v.push(value);
                        self.ws();
                        match self.peek() {
                            Some(',') => None,
                            Some('}') => Some(Term::Tuple(std::mem::take(v))),
                            _ => return Err(self.error("expected ',' or '}'")),
                        }
                    }
                    Open::List(v) => {
                        v.push(value);
                        self.ws();
                        match self.peek() {
                            Some(',') => None,
                            Some(']') => Some(Term::List(std::mem::take(v))),
                            Some('|') => {
                                *top = Open::Tail(std::mem::take(v));
                                None
                            }
                            _ => return Err(self.error("expected ',', '|' or ']'")),
                        }
                    }
                    Open::Tail(v) => {
                        self.expect(']')?;
                        self.pos -= 1;
                        Some(improper(std::mem::take(v), value))
                    }
                    Open::Map(entries, key) => match key.take() {
                        None => {
                            self.ws();
                            if !self.eat("=>") {
                                return Err(self.error("expected '=>'"));
                            }
                            *key = Some(value);
                            break;
                        }
                        Some(k) => {
                            entries.push((k, value));
                            self.ws();
                            match self.peek() {
                                Some(',') => None,
                                Some('}') => {
                                    Some(Term::Map(std::mem::take(entries).into_iter().collect()))
                                }
                                _ => return Err(self.error("expected ',' or '}'")),
                            }
                        }
                    },
                };
                // past the `,`, `|` or closing bracket
                self.pos += 1;
                match closed {
                    Some(t) => {
                        stack.pop();
                        value = t;
                    }
                    None => break,
                }
            }
        }
    }

    /// Starts the next term: a container's opening bracket opens it on
    /// `stack` (`None`; an empty one is returned whole), anything else is
    /// parsed and returned.
    fn open_or_scalar(&mut self, stack: &mut Vec<Open>) -> Result<Option<Term>, ParseError> {
        self.ws();
        let (open, close) = match self.peek() {
            Some('{') => (1, '}'),
            Some('[') => (1, ']'),
            Some('#') if self.peek_at(1) == Some('{') => (2, '}'),
            Some('<') if self.peek_at(1) == Some('<') => {
                self.pos += 2;
                return self.binary().map(Some);
            }
            _ => return self.simple_term().map(Some),
        };
        let kind = self.peek();
        self.pos += open;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.pos += 1;
        }
        Ok(match (kind, empty) {
            (Some('{'), true) => Some(Term::Tuple(Vec::new())),
            (Some('['), true) => Some(Term::List(Vec::new())),
            (_, true) => Some(Term::Map(crate::Map::new())),
            (Some('{'), false) => {
                stack.push(Open::Tuple(Vec::new()));
                None
            }
            (Some('['), false) => {
                stack.push(Open::List(Vec::new()));
                None
            }
            (_, false) => {
                stack.push(Open::Map(Vec::new(), None));
                None
            }
        })
    }

    #[inline(never)]
    fn simple_term(&mut self) -> Result<Term, ParseError> {
        let start = self.pos;
        let c = match self.peek() {
            Some(c) => c,
            None => return Err(self.error("expected a term")),
        };
        match c {
            '"' => {
                let s = self.string_lit('"')?;
                Ok(Term::List(
                    s.into_iter().map(|c| Term::Integer(c as i64)).collect(),
                ))
            }
            '\'' => {
                let s = self.string_lit('\'')?;
                let s: String = s.into_iter().filter_map(char::from_u32).collect();
                self.atom_from(start, &s)
            }
            '<' => {
                self.pos += 1;
                let a = self.uint()?;
                self.expect('.')?;
                let b = self.uint()?;
                self.expect('.')?;
                let c2 = self.uint()?;
                self.expect('>')?;
                if a != BigInt::from(0) {
                    return Err(self.error_at(
                        start,
                        "only local pids <0.N.S> have a shell form; use #Pid<Node.N.S.C>",
                    ));
                }
                Ok(Term::Pid(Pid {
                    node: Atom::new("nonode@nohost"),
                    id: self.u32_of(start, b)?,
                    serial: self.u32_of(start, c2)?,
                    creation: 0,
                }))
            }
            '#' => {
                self.pos += 1;
                self.hash_form(start)
            }
            '$' | '-' | '+' | '0'..='9' => self.number(),
            c if is_lower(c) => {
                let name = self.name();
                if name == "fun" {
                    return self.export();
                }
                if RESERVED.contains(&name.as_str()) {
                    return Err(self.error_at(start, "reserved word is not an atom; quote it"));
                }
                self.atom_from(start, &name)
            }
            _ => Err(self.error("expected a term")),
        }
    }

    fn u32_of(&self, at: usize, v: BigInt) -> Result<u32, ParseError> {
        u32::try_from(&v).map_err(|_| self.error_at(at, "number out of range"))
    }

    fn atom_from(&self, at: usize, s: &str) -> Result<Term, ParseError> {
        if s.chars().count() > MAX_ATOM_CHARS {
            return Err(self.error_at(at, "atom longer than 255 characters"));
        }
        Ok(Term::Atom(Atom::new(s)))
    }

    fn name(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if is_name_char(c) {
                s.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        s
    }

    fn atom(&mut self) -> Result<Atom, ParseError> {
        self.ws();
        let start = self.pos;
        match self.peek() {
            Some('\'') => {
                let s = self.string_lit('\'')?;
                let s: String = s.into_iter().filter_map(char::from_u32).collect();
                if s.chars().count() > MAX_ATOM_CHARS {
                    return Err(self.error_at(start, "atom longer than 255 characters"));
                }
                Ok(Atom::new(&s))
            }
            Some(c) if is_lower(c) => {
                let s = self.name();
                Ok(Atom::new(&s))
            }
            _ => Err(self.error("expected an atom")),
        }
    }

    fn export(&mut self) -> Result<Term, ParseError> {
        let module = self.atom()?;
        self.expect(':')?;
        let function = self.atom()?;
        self.expect('/')?;
        self.ws();
        let at = self.pos;
        let arity = self.uint()?;
        let arity = u8::try_from(&arity).map_err(|_| self.error_at(at, "arity out of range"))?;
        Ok(Term::Export {
            module,
            function,
            arity,
        })
    }

    fn hash_form(&mut self, start: usize) -> Result<Term, ParseError> {
        let kind = self.name();
        self.expect('<')?;
        let node = self.atom()?;
        let mut nums = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some('.') {
                self.pos += 1;
                self.ws();
                nums.push(self.uint()?);
            } else {
                break;
            }
        }
        self.expect('>')?;
        let u32s = |p: &Parser, v: &BigInt| p.u32_of(start, v.clone());
        match (kind.as_str(), nums.len()) {
            ("Pid", 3) => Ok(Term::Pid(Pid {
                node,
                id: u32s(self, &nums[0])?,
                serial: u32s(self, &nums[1])?,
                creation: u32s(self, &nums[2])?,
            })),
            ("Port", 2) => Ok(Term::Port(Port {
                node,
                id: u64::try_from(&nums[0]).map_err(|_| self.error_at(start, "number out of range"))?,
                creation: u32s(self, &nums[1])?,
            })),
            ("Ref", 2..=6) => Ok(Term::from(Reference {
                node,
                creation: u32s(self, &nums[0])?,
                ids: nums[1..]
                    .iter()
                    .map(|n| u32s(self, n))
                    .collect::<Result<_, _>>()?,
            })),
            _ => Err(self.error_at(start, "expected #Pid<Node.Id.Serial.Creation>, #Port<Node.Id.Creation> or #Ref<Node.Creation.Words...>")),
        }
    }

    fn binary(&mut self) -> Result<Term, ParseError> {
        // bit accumulator
        let mut bytes: Vec<u8> = Vec::new();
        let mut nbits: u64 = 0;
        let push_bits = |value: &BigInt, size: u64, bytes: &mut Vec<u8>, nbits: &mut u64| {
            // big-endian, two's complement truncation to `size` bits
            for i in (0..size).rev() {
                let bit = ((value >> (i as usize)) & BigInt::from(1)) == BigInt::from(1);
                let byte_i = (*nbits / 8) as usize;
                if byte_i == bytes.len() {
                    bytes.push(0);
                }
                if bit {
                    bytes[byte_i] |= 0x80 >> (*nbits % 8);
                }
                *nbits += 1;
            }
        };
        self.ws();
        if self.eat(">>") {
            return Ok(Term::Binary(bytes.into()));
        }
        loop {
            self.ws();
            let seg_start = self.pos;
            if self.peek() == Some('"') {
                let s = self.string_lit('"')?;
                for c in s {
                    push_bits(&BigInt::from(c), 8, &mut bytes, &mut nbits);
                }
            } else {
                let v = match &mut self.number()? {
                    Term::Integer(i) => BigInt::from(*i),
                    Term::BigInt(b) => std::mem::take(b),
                    _ => {
                        return Err(self.error_at(
                            seg_start,
                            "bit syntax segments must be integers or strings",
                        ))
                    }
                };
                self.ws();
                let size = if self.peek() == Some(':') {
                    self.pos += 1;
                    self.ws();
                    let at = self.pos;
                    let s = self.uint()?;
                    u64::try_from(&s)
                        .ok()
                        .filter(|&s| s <= 1 << 20)
                        .ok_or_else(|| self.error_at(at, "segment size out of range"))?
                } else {
                    8
                };
                push_bits(&v, size, &mut bytes, &mut nbits);
            }
            self.ws();
            if self.eat(">>") {
                break;
            }
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                return Err(self.error("expected ',' or '>>'"));
            }
        }
        let bits = (nbits % 8) as u8;
        if bits == 0 {
            Ok(Term::Binary(bytes.into()))
        } else {
            Ok(Term::BitBinary { bytes, bits })
        }
    }

    fn uint(&mut self) -> Result<BigInt, ParseError> {
        self.ws();
        let start = self.pos;
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                s.push(c);
                self.pos += 1;
            } else if c == '_' && !s.is_empty() {
                self.pos += 1;
            } else {
                break;
            }
        }
        s.parse::<BigInt>()
            .map_err(|_| self.error_at(start, "expected an integer"))
    }

    fn number(&mut self) -> Result<Term, ParseError> {
        self.ws();
        let start = self.pos;
        let mut neg = false;
        match self.peek() {
            Some('-') => {
                neg = true;
                self.pos += 1;
            }
            Some('+') => self.pos += 1,
            _ => {}
        }
        self.ws();
        if self.peek() == Some('$') {
            self.pos += 1;
            let c = self.char_lit()?;
            let v = c as i64;
            return Ok(Term::Integer(if neg { -v } else { v }));
        }
        let int_start = self.pos;
        let int = self.uint()?;
        // base#digits
        if self.peek() == Some('#') {
            let base = u32::try_from(&int)
                .ok()
                .filter(|b| (2..=36).contains(b))
                .ok_or_else(|| self.error_at(int_start, "base must be 2..36"))?;
            self.pos += 1;
            let dstart = self.pos;
            let mut s = String::new();
            while let Some(c) = self.peek() {
                if c.is_digit(base) {
                    s.push(c);
                    self.pos += 1;
                } else if c == '_' && !s.is_empty() {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let v = BigInt::parse_bytes(s.as_bytes(), base)
                .ok_or_else(|| self.error_at(dstart, "expected digits"))?;
            return Ok(Term::from_bigint(if neg { -v } else { v }));
        }
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
                self.pos += 1;
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let save = self.pos;
                self.pos += 1;
                if matches!(self.peek(), Some('-' | '+')) {
                    self.pos += 1;
                }
                if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos = save;
                } else {
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                }
            }
            let text: String = self.chars[int_start..self.pos]
                .iter()
                .filter(|c| **c != '_')
                .collect();
            let f: f64 = text
                .parse()
                .map_err(|_| self.error_at(int_start, "bad float"))?;
            if !f.is_finite() {
                return Err(self.error_at(start, "float out of range"));
            }
            return Ok(Term::Float(if neg { -f } else { f }));
        }
        Ok(Term::from_bigint(if neg { -int } else { int }))
    }

    fn char_lit(&mut self) -> Result<u32, ParseError> {
        match self.peek() {
            None => Err(self.error("expected a character")),
            Some('\\') => {
                self.pos += 1;
                self.escape()
            }
            Some(c) => {
                self.pos += 1;
                Ok(c as u32)
            }
        }
    }

    fn escape(&mut self) -> Result<u32, ParseError> {
        let at = self.pos;
        let c = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
        self.pos += 1;
        Ok(match c {
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            'b' => 8,
            'f' => 12,
            'e' => 27,
            's' => 32,
            'd' => 127,
            '0'..='7' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                v
            }
            'x' => {
                let mut s = String::new();
                if self.peek() == Some('{') {
                    self.pos += 1;
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == '}' {
                            break;
                        }
                        s.push(c);
                    }
                } else {
                    for _ in 0..2 {
                        if let Some(c) = self.peek() {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                let v =
                    u32::from_str_radix(&s, 16).map_err(|_| self.error_at(at, "bad \\x escape"))?;
                if char::from_u32(v).is_none() {
                    return Err(self.error_at(at, "bad \\x escape"));
                }
                v
            }
            '^' => {
                let c = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
                self.pos += 1;
                (c as u32) & 31
            }
            c => c as u32,
        })
    }

    fn string_lit(&mut self, quote: char) -> Result<Vec<u32>, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error_at(start, "unterminated quoted text")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c as u32);
                }
            }
        }
        // adjacent string literals concatenate
        if quote == '"' {
            let save = self.pos;
            self.ws();
            if self.peek() == Some('"') {
                out.extend(self.string_lit('"')?);
            } else {
                self.pos = save;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::format_float;

    #[test]
    fn floats_print_like_erl_short() {
        // expected texts from OTP 25's float_to_list(F, [short]) / ~p
        for (f, text) in [
            (2.71, "2.71"),
            (1.0e10, "1.0e10"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1.0e-5, "1.0e-5"),
            (123456789012345.0, "123456789012345.0"),
            (9007199254740992.0, "9.007199254740992e15"),
            (-0.0, "-0.0"),
            (5.0e-324, "5.0e-324"),
            // halfway between two 17-digit candidates: round to even
            (-2208084395856665.2, "-2208084395856665.2"),
        ] {
            assert_eq!(format_float(f), text);
        }
    }
}
