//! One module per subcommand.

pub mod epmd;
pub mod term;
