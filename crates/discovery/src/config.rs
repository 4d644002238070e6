//! config (todo)
