//! One module per subcommand.

pub mod epmd;
pub mod formation;
pub mod node;
pub mod ping;
pub mod rpc;
pub mod term;
