//! Phoenix.PubSub broadcast fan-out: one BEAM publisher (Elixir, OTP 25)
//! broadcasting to N subscribers of a topic on a Rust node, against the
//! same N subscribers on a BEAM node (Elixir's `Registry`, as Phoenix keeps
//! them) in the same run as the anchor. Every node is its own OS process
//! (this bench process is the Rust node). The BEAM side runs the default
//! adapter's message flow (`tests/elixir/pg_pubsub.exs`). Prints messages
//! per second (each delivered to all N subscribers) and the ratio.
//!
//!   cargo bench -p erlkube-node --bench pubsub
//!
//! Needs `erl`, `epmd` and `elixir`. PUBSUB_BENCH_N (subscribers, 10) and
//! PUBSUB_BENCH_M (messages per round, 20000) change the load.

use std::time::{Duration, Instant};

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, PUBSUB_SCOPE};
use erlkube_testkit::OtpEpmd;
use tokio::process::{Child, Command};

const COOKIE: &str = "psbench";
const ROUNDS: usize = 3;
const FLOW: &str = include_str!("../tests/elixir/pg_pubsub.exs");
const BENCH: &str = r#"
defmodule PubSubBench do
  def subscribers(name, topic, n, m) do
    case Process.whereis(:bench_coord) do
      nil -> :ok
      old -> Process.unregister(:bench_coord); Process.exit(old, :kill)
    end
    coord = spawn(fn -> coord(n, nil) end)
    Process.register(coord, :bench_coord)
    me = self()
    for _ <- 1..n do
      spawn(fn ->
        {:ok, _} = Registry.register(name, topic, nil)
        send(me, :subscribed)
        count(m, coord)
      end)
      receive do
        :subscribed -> :ok
      end
    end
    :ok
  end

  def wait do
    send(:bench_coord, {:wait, self()})
    receive do
      :all_done -> :ok
    end
  end

  def publish(name, topic, m) do
    for i <- 1..m, do: PgPubSub.broadcast(name, topic, {:msg, i})
    :ok
  end

  defp count(0, coord), do: send(coord, :done)
  defp count(k, coord) do
    receive do
      {:msg, _} -> count(k - 1, coord)
    end
  end

  defp coord(0, w) when is_pid(w), do: send(w, :all_done)
  defp coord(n, w) do
    receive do
      :done -> coord(n - 1, w)
      {:wait, p} -> coord(n, p)
    end
  end
end
:ok
"#;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn elixir(epmd: u16, name: &str) -> Child {
    Command::new("elixir")
        .args([
            "--name",
            name,
            "--cookie",
            COOKIE,
            "--erl",
            "-start_epmd false",
        ])
        .args(["-e", "Process.sleep(:infinity)"])
        .env("ERL_EPMD_PORT", epmd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("elixir must be installed")
}

async fn call(node: &Node, on: &str, m: &str, f: &str, args: Vec<Term>) -> Term {
    node.rpc_call(on, m, f, args, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("{m}:{f} on {on}: {e}"))
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let n = env_usize("PUBSUB_BENCH_N", 10);
    let m = env_usize("PUBSUB_BENCH_M", 20_000);
    let epmd = OtpEpmd::start().expect("epmd");
    let id = std::process::id();
    let (p, s) = (format!("pub_{id}@127.0.0.1"), format!("sub_{id}@127.0.0.1"));
    let _pc = elixir(epmd.port(), &p);
    let _sc = elixir(epmd.port(), &s);
    let mut c = NodeConfig::new(format!("rust_{id}@127.0.0.1"), Cookie::new(COOKIE));
    c.epmd_port = epmd.port();
    let rust = Node::start(c).await.unwrap();
    for target in [&p, &s] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while rust.connect(target).await.is_err() {
            assert!(Instant::now() < deadline, "{target} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        call(
            &rust,
            target,
            "Elixir.Code",
            "eval_string",
            vec![Term::binary(FLOW)],
        )
        .await;
        call(
            &rust,
            target,
            "Elixir.Code",
            "eval_string",
            vec![Term::binary(BENCH)],
        )
        .await;
    }
    call(
        &rust,
        &p,
        "net_kernel",
        "connect_node",
        vec![Term::atom(&s)],
    )
    .await;
    // Server Bench.R: the publisher and the Rust node; Bench.B: the
    // publisher and the BEAM subscriber node.
    let (sr, sb) = (Term::atom("Elixir.Bench.R"), Term::atom("Elixir.Bench.B"));
    call(&rust, &p, "Elixir.PgPubSub", "start", vec![sr.clone()]).await;
    call(&rust, &p, "Elixir.PgPubSub", "start", vec![sb.clone()]).await;
    call(&rust, &s, "Elixir.PgPubSub", "start", vec![sb.clone()]).await;
    rust.pubsub_start("Bench.R", 1).unwrap();
    let topic = Term::binary("bench");
    for (server, adapter) in [
        (&sr, "Elixir.Bench.R.Adapter"),
        (&sb, "Elixir.Bench.B.Adapter"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let members = call(
                &rust,
                &p,
                "Elixir.PgPubSub",
                "members",
                vec![server.clone()],
            )
            .await;
            if members.as_list().map(|l| l.len()) == Some(2)
                && (adapter.contains(".B.")
                    || rust
                        .pg_members(PUBSUB_SCOPE, &Term::atom(adapter))
                        .unwrap()
                        .len()
                        == 2)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pg membership of {adapter} did not converge"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let publish = |server: Term| {
        let rust = rust.clone();
        let p = p.clone();
        let topic = topic.clone();
        async move {
            call(
                &rust,
                &p,
                "Elixir.PubSubBench",
                "publish",
                vec![server, topic, Term::from(m as i64)],
            )
            .await;
        }
    };

    let mut best_rust = f64::MAX;
    let mut best_beam = f64::MAX;
    for round in 0..ROUNDS {
        // N Rust subscribers; each counts M messages.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(n);
        for _ in 0..n {
            let mut sub = rust.pubsub_subscribe("Bench.R", "bench").unwrap();
            let done = done_tx.clone();
            tokio::spawn(async move {
                for _ in 0..m {
                    if sub.recv().await.is_none() {
                        return;
                    }
                }
                let _ = done.send(()).await;
            });
        }
        let t = Instant::now();
        let pubt = tokio::spawn(publish(sr.clone()));
        for _ in 0..n {
            done_rx.recv().await.unwrap();
        }
        let rust_s = t.elapsed().as_secs_f64();
        pubt.await.unwrap();

        // The same on the BEAM subscriber node.
        call(
            &rust,
            &s,
            "Elixir.PubSubBench",
            "subscribers",
            vec![
                sb.clone(),
                topic.clone(),
                Term::from(n as i64),
                Term::from(m as i64),
            ],
        )
        .await;
        let t = Instant::now();
        let pubt = tokio::spawn(publish(sb.clone()));
        call(&rust, &s, "Elixir.PubSubBench", "wait", vec![]).await;
        let beam_s = t.elapsed().as_secs_f64();
        pubt.await.unwrap();
        println!(
            "round {round}: Rust subscribers {:.0} msg/s, BEAM subscribers {:.0} msg/s",
            m as f64 / rust_s,
            m as f64 / beam_s
        );
        best_rust = best_rust.min(rust_s);
        best_beam = best_beam.min(beam_s);
    }
    let (r, b) = (m as f64 / best_rust, m as f64 / best_beam);
    println!("pubsub fan-out: 1 BEAM publisher -> {n} subscribers, {m} messages per round, best of {ROUNDS}");
    println!(
        "  BEAM subscriber node (anchor) {b:>10.0} msg/s  ({:.0} deliveries/s)",
        b * n as f64
    );
    println!("  Rust subscriber node          {r:>10.0} msg/s  ({:.0} deliveries/s)  ratio (Rust/BEAM) {:.2}", r * n as f64, r / b);
    println!("  load average: {}", load_avg());
    rust.shutdown();
}
