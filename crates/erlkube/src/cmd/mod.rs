//! One module per subcommand.

pub mod epmd;
pub mod formation;
pub mod term;
