//! One module per subcommand.

pub mod agent;
pub mod env;
pub mod epmd;
pub mod formation;
pub mod manifests;
pub mod node;
pub mod node_discovery;
pub mod nodename;
pub mod ping;
pub mod remsh;
pub mod rpc;
pub mod term;
