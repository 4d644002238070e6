//! One module per subcommand.

pub mod epmd;
pub mod formation;
pub mod node;
pub mod node_discovery;
pub mod ping;
pub mod rpc;
pub mod term;
