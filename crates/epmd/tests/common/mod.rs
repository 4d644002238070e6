//! Shared helpers: erlkube's daemon on its own thread and runtime, so tests
//! can block (on `erl` nodes, OTP's command-line client) while it serves.
#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use erlkube_epmd::metrics::Metrics;
use erlkube_epmd::server::{bind_one, run, Config, Exit};
use tokio::sync::oneshot;

/// erlkube's port mapper served in-process on 127.0.0.1 (and ::1 on the
/// same port when the host has IPv6), on a free port.
pub struct Daemon {
    pub port: u16,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<Exit>>>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(Config::default())
    }

    pub fn start_relaxed() -> Daemon {
        Daemon::start_with(Config {
            relaxed_command_check: true,
            ..Config::default()
        })
    }

    pub fn start_with(mut config: Config) -> Daemon {
        let metrics = config.metrics.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let v4 = bind_one(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
                let port = v4.local_addr()?.port();
                let mut listeners = vec![v4];
                if let Ok(v6) = bind_one(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
                    listeners.push(v6);
                }
                config.announced_port = Some(port);
                port_tx.send(port).unwrap();
                run(listeners, config, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        let port = port_rx.recv().expect("daemon thread failed to bind");
        Daemon {
            port,
            metrics,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Waits for the daemon to stop by itself (after a KILL) and returns why.
    pub fn join(mut self) -> Exit {
        // Keep the shutdown sender alive: only a KILL may end the daemon.
        let _keep = self.stop.take();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }

    /// True once the serving thread has returned.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a future on a fresh current-thread runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn node_info(name: &str, port: u16) -> erlkube_epmd::NodeInfo {
    erlkube_epmd::NodeInfo {
        port,
        node_type: erlkube_proto::epmd::NODE_TYPE_NORMAL,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        name: name.into(),
        extra: Vec::new(),
    }
}
