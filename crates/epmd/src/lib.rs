//! The port-mapper daemon and client, over `erlkube-proto`'s EPMD messages. Uses tokio.
