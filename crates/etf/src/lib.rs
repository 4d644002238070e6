//! Erlang's External Term Format (ETF). Owns the `Term` type, the encoder and
//! decoder, and the Erlang-syntax printer and parser. Does no IO.
