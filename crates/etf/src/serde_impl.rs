//! Serde support: Rust values ⇄ [`Term`] (the mapping is in the crate docs).

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::ser::{self, Serialize};

use crate::term::{Atom, BigInt, Map, Term};

/// Error of [`to_term`] and [`from_term`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message from a `Serialize`/`Deserialize` implementation.
    #[error("{0}")]
    Message(String),
    /// A float that is NaN or infinite (terms cannot hold them).
    #[error("float {0} is not finite")]
    NonFiniteFloat(f64),
    /// The term's shape does not fit the Rust type.
    #[error("expected {expected}, found {found}")]
    Mismatch {
        /// What the Rust type wanted.
        expected: &'static str,
        /// The term found (Erlang syntax, shortened).
        found: String,
    },
    /// A field or variant name longer than 255 characters (atoms cannot be).
    #[error("atom too long: {0}")]
    AtomTooLong(String),
    /// The value nests deeper than [`SERDE_MAX_DEPTH`] levels. Serde's
    /// `Serialize` and `Deserialize` recurse once per level on the thread's
    /// stack, so deeper values are refused instead of overflowing it (as
    /// serde_json does); encode and decode the [`Term`] itself, which
    /// takes any depth.
    #[error(
        "value nested deeper than {0} levels (serde recurses per level; \
         use the Term directly for deeper terms)"
    )]
    DepthLimit(usize),
}

/// Nesting limit of [`to_term`] and [`from_term`] (as serde_json's 128),
/// counted in serde's levels: each element of a sequence, tuple, map or
/// struct, each newtype and each `Some` is one. Past it they fail with [`Error::DepthLimit`] instead of overflowing
/// the thread's stack in serde's own recursion.
pub const SERDE_MAX_DEPTH: usize = 128;

thread_local! {
    /// Levels of this thread's serde conversions open inside each other.
    static SERDE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One level of nesting of a serde conversion, held while a nested value
/// is (de)serialized; refused past [`SERDE_MAX_DEPTH`].
struct Nest;

impl Nest {
    fn enter() -> Result<Nest, Error> {
        SERDE_DEPTH.with(|d| {
            if d.get() >= SERDE_MAX_DEPTH {
                return Err(Error::DepthLimit(SERDE_MAX_DEPTH));
            }
            d.set(d.get() + 1);
            Ok(Nest)
        })
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        SERDE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}

fn mismatch(expected: &'static str, t: &Term) -> Error {
    let mut found = t.to_string();
    if found.len() > 80 {
        let mut cut = 77;
        while !found.is_char_boundary(cut) {
            cut -= 1;
        }
        found.truncate(cut);
        found.push_str("...");
    }
    Error::Mismatch { expected, found }
}

/// Converts a Rust value to a term.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// #[serde(rename_all = "snake_case")]
/// enum Request {
///     Put(String, i64), // {put, <<"k">>, 1}
///     Get(String),      // {get, <<"k">>}
/// }
/// let t = erlkube_etf::to_term(&Request::Put("k".into(), 1)).unwrap();
/// assert_eq!(t.to_string(), r#"{put,<<"k">>,1}"#);
/// let back: Request = erlkube_etf::from_term(&t).unwrap();
/// assert_eq!(back, Request::Put("k".into(), 1));
/// ```
pub fn to_term<T: Serialize + ?Sized>(value: &T) -> Result<Term, Error> {
    value.serialize(Serializer)
}

/// Converts a term to a Rust value.
pub fn from_term<T: DeserializeOwned>(term: &Term) -> Result<T, Error> {
    T::deserialize(Deserializer(term))
}

fn atom(name: &str) -> Result<Term, Error> {
    Atom::try_new(name)
        .map(Term::Atom)
        .map_err(|_| Error::AtomTooLong(name.to_string()))
}

/// The serializer: produces a [`Term`].
pub struct Serializer;

/// Sequence/tuple builder.
pub struct SeqBuilder {
    elems: Vec<Term>,
    tag: Option<Term>,
    tuple: bool,
}

/// Map/struct builder.
pub struct MapBuilder {
    map: Vec<(Term, Term)>,
    key: Option<Term>,
    tag: Option<Term>,
}

impl ser::Serializer for Serializer {
    type Ok = Term;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Term, Error> {
        Ok(Term::boolean(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Term, Error> {
        Ok(Term::Integer(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Term, Error> {
        Ok(Term::from_bigint(BigInt::from(v)))
    }
    fn serialize_u8(self, v: u8) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Term, Error> {
        Ok(Term::Integer(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Term, Error> {
        Ok(Term::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Term, Error> {
        Ok(Term::from_bigint(BigInt::from(v)))
    }
    fn serialize_f32(self, v: f32) -> Result<Term, Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Term, Error> {
        if v.is_finite() {
            Ok(Term::Float(v))
        } else {
            Err(Error::NonFiniteFloat(v))
        }
    }
    fn serialize_char(self, v: char) -> Result<Term, Error> {
        Ok(Term::Integer(v as i64))
    }
    fn serialize_str(self, v: &str) -> Result<Term, Error> {
        Ok(Term::Binary(crate::Binary::from_slice(v.as_bytes())))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Term, Error> {
        Ok(Term::Binary(crate::Binary::from_slice(v)))
    }
    fn serialize_none(self) -> Result<Term, Error> {
        Ok(Term::atom("nil"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Term, Error> {
        let _level = Nest::enter()?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Term, Error> {
        Ok(Term::atom("nil"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Term, Error> {
        Ok(Term::atom("nil"))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Term, Error> {
        atom(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Term, Error> {
        let _level = Nest::enter()?;
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Term, Error> {
        let _level = Nest::enter()?;
        Ok(Term::Tuple(vec![atom(variant)?, value.serialize(self)?]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder {
            elems: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            tag: None,
            tuple: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder {
            elems: Vec::with_capacity(len.min(4096)),
            tag: None,
            tuple: true,
        })
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder {
            elems: Vec::with_capacity(len.min(4096)),
            tag: Some(atom(variant)?),
            tuple: true,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            map: Vec::new(),
            key: None,
            tag: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<MapBuilder, Error> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            map: Vec::new(),
            key: None,
            tag: Some(atom(variant)?),
        })
    }
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let _level = Nest::enter()?;
        self.elems.push(v.serialize(Serializer)?);
        Ok(())
    }
    fn finish(self) -> Term {
        match self.tag {
            Some(tag) => {
                let mut v = Vec::with_capacity(self.elems.len() + 1);
                v.push(tag);
                v.extend(self.elems);
                Term::Tuple(v)
            }
            None if self.tuple => Term::Tuple(self.elems),
            None => Term::List(self.elems),
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}
impl ser::SerializeTuple for SeqBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}
impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}
impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}

impl MapBuilder {
    fn finish(self) -> Term {
        let m = Term::Map(self.map.into_iter().collect::<Map>());
        match self.tag {
            Some(tag) => Term::Tuple(vec![tag, m]),
            None => m,
        }
    }
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        let _level = Nest::enter()?;
        self.map.push((atom(key)?, v.serialize(Serializer)?));
        Ok(())
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let _level = Nest::enter()?;
        self.key = Some(key.serialize(Serializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let k = self
            .key
            .take()
            .ok_or_else(|| Error::Message("map value without a key".into()))?;
        let _level = Nest::enter()?;
        self.map.push((k, v.serialize(Serializer)?));
        Ok(())
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}
impl ser::SerializeStruct for MapBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.field(key, v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}
impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.field(key, v)
    }
    fn end(self) -> Result<Term, Error> {
        Ok(self.finish())
    }
}

/// The deserializer: reads a borrowed [`Term`].
pub struct Deserializer<'t>(pub &'t Term);

fn is_nil_atom(t: &Term) -> bool {
    matches!(t, Term::Atom(a) if a.as_str() == "nil" || a.as_str() == "undefined")
}

fn charlist(v: &[Term]) -> Option<String> {
    v.iter()
        .map(|e| match e {
            Term::Integer(i) => u32::try_from(*i).ok().and_then(char::from_u32),
            _ => None,
        })
        .collect()
}

struct Seq<'t> {
    iter: std::slice::Iter<'t, Term>,
}

impl<'de, 't> SeqAccess<'de> for Seq<'t> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        match self.iter.next() {
            Some(t) => {
                let _level = Nest::enter()?;
                seed.deserialize(Deserializer(t)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapAcc<'t> {
    iter: std::slice::Iter<'t, (Term, Term)>,
    value: Option<&'t Term>,
}

impl<'de, 't> MapAccess<'de> for MapAcc<'t> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let _level = Nest::enter()?;
                seed.deserialize(KeyDeserializer(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(v) => {
                let _level = Nest::enter()?;
                seed.deserialize(Deserializer(v))
            }
            None => Err(Error::Message("map value requested before its key".into())),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Map keys: atoms and binaries read as identifiers/strings.
struct KeyDeserializer<'t>(&'t Term);

impl<'de, 't> de::Deserializer<'de> for KeyDeserializer<'t> {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Deserializer(self.0).deserialize_any(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            _ => Deserializer(self.0).deserialize_identifier(visitor),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            _ => Deserializer(self.0).deserialize_str(visitor),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum ignored_any
    }
}

struct Enum<'t> {
    variant: &'t Atom,
    rest: &'t [Term],
}

impl<'de, 't> EnumAccess<'de> for Enum<'t> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(self.variant.as_str().into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de, 't> VariantAccess<'de> for Enum<'t> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::Message(format!(
                "unit variant {} has data",
                self.variant.as_str()
            )))
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.rest {
            [v] => {
                let _level = Nest::enter()?;
                seed.deserialize(Deserializer(v))
            }
            _ => Err(Error::Message(format!(
                "variant {} expects {{{}, Value}}",
                self.variant.as_str(),
                self.variant.as_str()
            ))),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Seq {
            iter: self.rest.iter(),
        })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.rest {
            [m @ Term::Map(_)] => de::Deserializer::deserialize_map(Deserializer(m), visitor),
            _ => Err(Error::Message(format!(
                "variant {} expects {{{}, #{{...}}}}",
                self.variant.as_str(),
                self.variant.as_str()
            ))),
        }
    }
}

impl<'de, 't> de::Deserializer<'de> for Deserializer<'t> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Integer(i) => visitor.visit_i64(*i),
            Term::BigInt(b) => {
                if let Ok(u) = u64::try_from(b) {
                    visitor.visit_u64(u)
                } else if let Ok(i) = i128::try_from(b) {
                    visitor.visit_i128(i)
                } else if let Ok(u) = u128::try_from(b) {
                    visitor.visit_u128(u)
                } else {
                    Err(mismatch("an integer of at most 128 bits", self.0))
                }
            }
            Term::Float(f) => visitor.visit_f64(*f),
            Term::Atom(a) => match a.as_str() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                "nil" | "undefined" => visitor.visit_unit(),
                s => visitor.visit_str(s),
            },
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => visitor.visit_bytes(b),
            },
            Term::List(v) | Term::Tuple(v) => visitor.visit_seq(Seq { iter: v.iter() }),
            Term::Map(m) => visitor.visit_map(MapAcc {
                iter: m.entries().iter(),
                value: None,
            }),
            t => Err(mismatch("a term with a serde equivalent", t)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.as_bool() {
            Some(b) => visitor.visit_bool(b),
            None => Err(mismatch("true or false", self.0)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Integer(i) => match u32::try_from(*i).ok().and_then(char::from_u32) {
                Some(c) => visitor.visit_char(c),
                None => Err(mismatch("a character code", self.0)),
            },
            _ => self.deserialize_str(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => Err(mismatch("a UTF-8 binary", self.0)),
            },
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            Term::List(v) => match charlist(v) {
                Some(s) => visitor.visit_string(s),
                None => Err(mismatch("a string", self.0)),
            },
            t => Err(mismatch("a string", t)),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Binary(b) => visitor.visit_bytes(b),
            Term::List(v) => {
                let bytes: Option<Vec<u8>> = v
                    .iter()
                    .map(|e| e.as_integer().and_then(|i| u8::try_from(i).ok()))
                    .collect();
                match bytes {
                    Some(b) => visitor.visit_byte_buf(b),
                    None => Err(mismatch("a binary", self.0)),
                }
            }
            t => Err(mismatch("a binary", t)),
        }
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if is_nil_atom(self.0) {
            visitor.visit_none()
        } else {
            let _level = Nest::enter()?;
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if is_nil_atom(self.0) {
            visitor.visit_unit()
        } else {
            Err(mismatch("nil", self.0))
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let _level = Nest::enter()?;
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::List(v) | Term::Tuple(v) => visitor.visit_seq(Seq { iter: v.iter() }),
            t => Err(mismatch("a list", t)),
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Map(m) => visitor.visit_map(MapAcc {
                iter: m.entries().iter(),
                value: None,
            }),
            t => Err(mismatch("a map", t)),
        }
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Term::Atom(a) => visitor.visit_enum(Enum {
                variant: a,
                rest: &[],
            }),
            Term::Tuple(v) => match v.split_first() {
                Some((Term::Atom(a), rest)) => visitor.visit_enum(Enum { variant: a, rest }),
                _ => Err(mismatch("{variant, ...}", self.0)),
            },
            t => Err(mismatch("an atom or {variant, ...}", t)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => Err(mismatch("an identifier", self.0)),
            },
            Term::Integer(i) if *i >= 0 => visitor.visit_u64(*i as u64),
            t => Err(mismatch("an identifier", t)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect(u32, u32),
        Named { name: String, sides: u8 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Config {
        name: String,
        port: u16,
        enabled: bool,
        tags: Vec<String>,
        limit: Option<u64>,
        shape: Shape,
        pair: (i32, char),
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        big: u64,
        extra: BTreeMap<String, i64>,
    }

    #[test]
    fn mapping_matches_the_documented_table() {
        let c = Config {
            name: "node".into(),
            port: 4369,
            enabled: true,
            tags: vec!["a".into(), "b".into()],
            limit: None,
            shape: Shape::Rect(2, 3),
            pair: (-1, 'x'),
            raw: vec![0, 255],
            big: u64::MAX,
            extra: BTreeMap::from([("k".to_string(), 1)]),
        };
        let t = to_term(&c).unwrap();
        let expected = parse(
            r#"#{name => <<"node">>, port => 4369, enabled => true, tags => [<<"a">>, <<"b">>],
                 limit => nil, shape => {'Rect', 2, 3}, pair => {-1, $x}, raw => <<0, 255>>,
                 big => 18446744073709551615, extra => #{<<"k">> => 1}}"#,
        )
        .unwrap();
        assert_eq!(t, expected);
        assert_eq!(from_term::<Config>(&t).unwrap(), c);
    }

    #[test]
    fn enum_variants() {
        for (v, text) in [
            (Shape::Empty, "'Empty'"),
            (Shape::Circle(1.5), "{'Circle', 1.5}"),
            (Shape::Rect(1, 2), "{'Rect', 1, 2}"),
            (
                Shape::Named {
                    name: "tri".into(),
                    sides: 3,
                },
                r#"{'Named', #{name => <<"tri">>, sides => 3}}"#,
            ),
        ] {
            let t = to_term(&v).unwrap();
            assert_eq!(t, parse(text).unwrap());
            assert_eq!(from_term::<Shape>(&t).unwrap(), v);
        }
    }

    #[test]
    fn decoding_is_lenient_where_documented() {
        assert_eq!(
            from_term::<Option<u8>>(&parse("undefined").unwrap()).unwrap(),
            None
        );
        assert_eq!(
            from_term::<Option<u8>>(&parse("7").unwrap()).unwrap(),
            Some(7)
        );
        assert_eq!(
            from_term::<String>(&parse("\"abc\"").unwrap()).unwrap(),
            "abc"
        );
        assert_eq!(from_term::<String>(&parse("abc").unwrap()).unwrap(), "abc");
        assert!(matches!(
            from_term::<u8>(&parse("300").unwrap()),
            Err(Error::Message(_))
        ));
        assert!(matches!(
            from_term::<bool>(&parse("yes").unwrap()),
            Err(Error::Mismatch { .. })
        ));
        assert!(matches!(to_term(&f64::NAN), Err(Error::NonFiniteFloat(_))));
    }

    /// `[[[...]]]`: a list of itself.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Nested(Vec<Nested>);

    /// Always `Some` on a term that is not `nil`: without a limit its
    /// deserialization would never end.
    #[derive(Debug, Serialize, Deserialize)]
    struct Chain(Option<Box<Chain>>);

    fn nested(levels: usize) -> Nested {
        let mut n = Nested(Vec::new());
        for _ in 0..levels {
            n = Nested(vec![n]);
        }
        n
    }

    /// Within [`SERDE_MAX_DEPTH`] deep values convert both ways; past it
    /// both directions refuse with [`Error::DepthLimit`] (a million-level
    /// term included) instead of overflowing the stack, and the thread's
    /// count is back to zero afterwards.
    #[test]
    fn serde_refuses_values_nested_past_its_limit() {
        // a newtype and a sequence element are two serde levels per list
        let fits = nested(SERDE_MAX_DEPTH / 2 - 1);
        let t = to_term(&fits).unwrap();
        assert_eq!(from_term::<Nested>(&t).unwrap(), fits);
        let mut deep = Term::nil();
        for _ in 0..SERDE_MAX_DEPTH / 2 - 1 {
            deep = Term::List(vec![deep]);
        }
        assert_eq!(t, deep);

        let too_deep = nested(SERDE_MAX_DEPTH);
        assert_eq!(to_term(&too_deep), Err(Error::DepthLimit(SERDE_MAX_DEPTH)));
        let mut million = Term::nil();
        for _ in 0..1_000_000 {
            million = Term::List(vec![million]);
        }
        let e = from_term::<Nested>(&million).unwrap_err();
        assert_eq!(e, Error::DepthLimit(SERDE_MAX_DEPTH));
        assert!(e.to_string().contains("128"), "{e}");
        let e = from_term::<Chain>(&Term::atom("x")).unwrap_err();
        assert_eq!(e, Error::DepthLimit(SERDE_MAX_DEPTH));
        // the count unwound: shallow values still convert
        assert_eq!(SERDE_DEPTH.with(|d| d.get()), 0);
        assert_eq!(from_term::<Nested>(&deep).unwrap(), fits);
        drop(million);
    }
}
