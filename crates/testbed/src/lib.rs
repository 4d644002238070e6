//! The multi-pod test bed: "pods" are network namespaces with their own
//! IPv4 and IPv6 addresses on a bridge, a real DNS server (dnsmasq, in its
//! own namespace) plays the cluster DNS of a headless Service (A, AAAA, SRV
//! and per-pod host records, updated as pods come and go), and real `erl`
//! nodes run inside the pods. Does IO: runs `ip`, `dnsmasq`, `epmd`, `erl`;
//! needs root (Linux).
//!
//! Isolation: every name starts with a per-bed id (`tb<pid>x<n>`), the
//! subnet is a private `10.A.B.0/24` (and `fd65:A:B::/64`) chosen per bed,
//! and all traffic stays on the bed's bridge and namespaces. Everything is
//! removed when the [`Bed`] is dropped (also on panic); leftovers of dead
//! test processes are removed when a bed starts ([`cleanup_leftovers`]).
//!
//! ```text
//!  test process (root ns)            tb..-d ns: dnsmasq :53  (10.A.B.2)
//!    engines ---DNS---> bridge tb..-b (10.A.B.1) <--veth--+
//!    eval channel (stdin) ------------+        <--veth--- tb..-p1 ns: epmd, erl (10.A.B.11)
//!                                     +------> <--veth--- tb..-p2 ns: epmd, erl (10.A.B.12) ...
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod actor;
pub mod erl;
pub mod harness;
pub mod net;
pub mod process;
pub mod rust;
pub mod sys;

pub use actor::BeamActor;
pub use erl::{ErlRuntime, ErlSpec, EvalError, PodErl};

use net::{in_netns, ip, run};
use process::Guard;

/// Fails (panics) with a clear message unless running as root: the test
/// bed creates namespaces and links.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the erlkube test bed needs root (network namespaces, veth, bridge); run the tests as root (CI does)"
    );
}

/// Removes namespaces and links left by test beds whose process is gone.
pub fn cleanup_leftovers() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("tb") else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            return false;
        };
        match i32::from_str_radix(pid, 16) {
            Ok(p) => !Path::new(&format!("/proc/{p}")).exists(),
            Err(_) => false,
        }
    };
    for ns in net::netns_list() {
        if dead(&ns) {
            net::netns_delete(&ns);
        }
    }
    for link in net::link_list() {
        if dead(&link) {
            let _ = ip(&["link", "delete", &link]);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_prefix("erlkube-testbed-") {
                if dead(id) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// How pods' nodes are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `basename@<IPv4>` (DNS A strategy, static).
    Ipv4,
    /// `basename@<IPv6>` with IPv6 distribution (DNS AAAA).
    Ipv6,
    /// `basename@pod-N.<service fqdn>`, resolved by the pods through the
    /// bed's DNS (DNS SRV strategy, StatefulSet-style names).
    Hostname,
}

/// Settings of a bed.
#[derive(Clone, Debug)]
pub struct BedConfig {
    /// Headless Service name.
    pub service: String,
    /// Kubernetes namespace (in DNS names).
    pub namespace: String,
    /// Node name part.
    pub basename: String,
    /// Cookie of every node.
    pub cookie: String,
    /// epmd port inside every pod (pods are isolated; not 4369 anyway).
    pub epmd_port: u16,
    /// Distribution port of every node.
    pub dist_port: u16,
    /// `net_ticktime` of the nodes, seconds.
    pub net_ticktime: u32,
    /// Node naming.
    pub naming: Naming,
    /// Pods' host names are `<pod_prefix>-N.<service fqdn>` (a
    /// StatefulSet's pods: its name).
    pub pod_prefix: String,
    /// Port names whose SRV name `_<name>._tcp.<service fqdn>` also lists
    /// the published pods, as cluster DNS does for a headless Service's
    /// named ports.
    pub srv_ports: Vec<String>,
    /// How pods' `erl` runs (the host's OTP by default; another OTP in a
    /// chroot, extra arguments).
    pub erl: ErlRuntime,
    /// The pods' port mapper: a program taking OTP's `-port P` (OTP's
    /// `epmd` by default; erlkube's `erlkube-epmd` is a drop-in).
    pub epmd_program: String,
}

impl Default for BedConfig {
    fn default() -> BedConfig {
        BedConfig {
            service: "app-headless".into(),
            namespace: "default".into(),
            basename: "app".into(),
            cookie: "erlkube_testbed".into(),
            epmd_port: 4370,
            dist_port: 9100,
            net_ticktime: 4,
            naming: Naming::Ipv4,
            pod_prefix: "pod".into(),
            srv_ports: Vec::new(),
            erl: ErlRuntime::default(),
            epmd_program: "epmd".into(),
        }
    }
}

/// One pod.
pub struct Pod {
    /// Index (unique in the bed, never reused).
    pub index: u32,
    /// Network namespace name.
    pub netns: String,
    /// Host-side veth (down = partitioned).
    pub veth: String,
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// `<pod_prefix>-N.<service fqdn>`.
    pub hostname: String,
    /// The node's name.
    pub node_name: String,
    /// Whether the Service's DNS records list the pod (ready endpoint).
    pub published: bool,
    /// The BEAM node (`None` for a bare pod, see [`Bed::add_bare_pods`]).
    pub erl: Option<Arc<PodErl>>,
    /// How to read a bare pod's `nodes()` (see [`Bed::set_view`]).
    view: Option<View>,
    epmd: Guard,
}

/// Reads the connected (visible) nodes of a bare pod's own node.
pub type View = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("index", &self.index)
            .field("netns", &self.netns)
            .field("ipv4", &self.ipv4)
            .field("node_name", &self.node_name)
            .field("published", &self.published)
            .field("bare", &self.erl.is_none())
            .finish()
    }
}

impl Pod {
    /// The pod's node's visible peers: `nodes()` of its BEAM node, or the
    /// view set for a bare pod (empty when none is set).
    pub async fn nodes(&self) -> Result<Vec<String>, EvalError> {
        self.nodes_owned().await
    }

    /// Like [`Pod::nodes`], as a future that owns what it reads (to query
    /// many pods at once).
    pub fn nodes_owned(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<String>, EvalError>> + Send + 'static {
        let (erl, view) = (self.erl.clone(), self.view.clone());
        async move {
            match (erl, view) {
                (Some(e), _) => e.nodes().await,
                (None, Some(v)) => Ok(v()),
                (None, None) => Ok(Vec::new()),
            }
        }
    }

    /// Kills the pod's processes and removes its links and namespace.
    fn destroy(mut self) {
        if let Some(e) = &self.erl {
            e.kill();
        }
        self.epmd.kill();
        let _ = ip(&["link", "delete", &self.veth]);
        net::netns_delete(&self.netns);
    }

    /// The pod's BEAM node; panics for a bare pod.
    pub fn beam(&self) -> &Arc<PodErl> {
        self.erl
            .as_ref()
            .unwrap_or_else(|| panic!("pod {} is bare (no erl node)", self.index))
    }
}

/// A running test bed. Dropping it removes everything it created.
pub struct Bed {
    id: String,
    config: BedConfig,
    net: (u8, u8),
    bridge: String,
    dns_ns: String,
    dns: Option<Guard>,
    dns_log: Arc<Mutex<String>>,
    srv_published: Vec<String>,
    dir: PathBuf,
    pods: BTreeMap<u32, Pod>,
    next_index: u32,
    neighbour_limits: Option<sys::NeighbourLimits>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SUBNETS: Mutex<Vec<(u8, u8)>> = Mutex::new(Vec::new());

fn pick_subnet() -> (u8, u8) {
    let used_routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    let mut taken = SUBNETS.lock().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(7);
    let mut x = seed as u64;
    loop {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = 100 + ((x >> 33) % 150) as u8;
        let b = ((x >> 17) % 256) as u8;
        let prefix = format!("10.{a}.{b}.");
        if !taken.contains(&(a, b)) && !used_routes.contains(&prefix) {
            taken.push((a, b));
            return (a, b);
        }
    }
}

impl Bed {
    /// Creates the bridge and the DNS server (no pods yet). Removes
    /// leftovers of dead beds first.
    pub fn new(config: BedConfig) -> io::Result<Bed> {
        require_root();
        cleanup_leftovers();
        let id = format!(
            "tb{:x}x{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed) % 256
        );
        let dir = std::env::temp_dir().join(format!("erlkube-testbed-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let net = pick_subnet();
        let mut bed = Bed {
            bridge: format!("{id}-b"),
            dns_ns: format!("{id}-d"),
            id,
            config,
            net,
            dns: None,
            dns_log: Arc::default(),
            srv_published: Vec::new(),
            dir,
            pods: BTreeMap::new(),
            next_index: 1,
            neighbour_limits: None,
        };
        bed.setup()?;
        Ok(bed)
    }

    fn setup(&mut self) -> io::Result<()> {
        let (a, b) = self.net;
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.{a}.{b}.1/24"),
            "dev",
            &self.bridge,
        ])?;
        let _ = ip(&[
            "-6",
            "addr",
            "add",
            &format!("fd65:{a:x}:{b:x}::1/64"),
            "dev",
            &self.bridge,
            "nodad",
        ]);
        ip(&["link", "set", &self.bridge, "up"])?;
        let dns_ns = self.dns_ns.clone();
        self.attach(
            &dns_ns,
            &format!("{}-d", self.id),
            Ipv4Addr::new(10, a, b, 2),
            self.v6(2),
        )?;
        self.write_dns_files()?;
        self.start_dns()
    }

    fn v6(&self, host: u32) -> Ipv6Addr {
        let (a, b) = self.net;
        Ipv6Addr::new(0xfd65, a as u16, b as u16, 0, 0, 0, 0, host as u16)
    }

    /// Creates namespace `ns` with a veth `eth0` to the bridge and the
    /// addresses.
    fn attach(&self, ns: &str, veth: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> io::Result<()> {
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["link", "set", veth, "master", &self.bridge])?;
        ip(&["link", "set", veth, "up"])?;
        let x = |args: &[&str]| -> io::Result<String> {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            ip(&full)
        };
        x(&["link", "set", "lo", "up"])?;
        x(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        x(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        x(&["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The bed's id (prefix of every name it creates).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bridge's address (`.1` of the bed's subnet, in the host's
    /// namespace): where a service the pods reach, such as the Kubernetes
    /// API emulator, listens.
    pub fn bridge_ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, 1)
    }

    /// The DNS server's address (`ip:53`) for strategies.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, self.net.0, self.net.1, 2)), 53)
    }

    /// The Service's DNS name (`service.namespace.svc.cluster.local`).
    pub fn service_fqdn(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            self.config.service, self.config.namespace
        )
    }

    /// The configuration.
    pub fn config(&self) -> &BedConfig {
        &self.config
    }

    fn write_dns_files(&mut self) -> io::Result<()> {
        let svc = self.service_fqdn();
        let mut hosts = String::new();
        let mut srv = Vec::new();
        for p in self.pods.values() {
            hosts.push_str(&format!(
                "{} {}\n{} {}\n",
                p.ipv4, p.hostname, p.ipv6, p.hostname
            ));
            if p.published {
                hosts.push_str(&format!("{} {svc}\n{} {svc}\n", p.ipv4, p.ipv6));
                let port_names = self.config.srv_ports.iter();
                for name in std::iter::once(svc.clone())
                    .chain(port_names.map(|n| format!("_{n}._tcp.{svc}")))
                {
                    srv.push(format!(
                        "srv-host={name},{},{},0,100",
                        p.hostname, self.config.dist_port
                    ));
                }
            }
        }
        std::fs::write(self.dir.join("hosts"), hosts)?;
        let conf = format!(
            "no-resolv\nno-hosts\nlocal=/cluster.local/\nport=53\nlocal-ttl=0\naddn-hosts={}\n{}\n",
            self.dir.join("hosts").display(),
            srv.join("\n")
        );
        std::fs::write(self.dir.join("dnsmasq.conf"), conf)?;
        let changed_srv = srv != self.srv_published;
        self.srv_published = srv;
        if self.dns.is_some() {
            if changed_srv {
                self.stop_dns();
                self.start_dns()?;
            } else if let Some(g) = &self.dns {
                g.signal(libc::SIGHUP);
                // dnsmasq logs "read <file>" when it has reloaded.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Starts the DNS server (if stopped) and waits until it serves.
    pub fn start_dns(&mut self) -> io::Result<()> {
        if self.dns.is_some() {
            return Ok(());
        }
        let mut cmd = in_netns(&self.dns_ns, "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--log-facility=-",
            "--user=root",
            "--pid-file",
        ])
        .arg(format!(
            "--conf-file={}",
            self.dir.join("dnsmasq.conf").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut g = Guard::spawn(&mut cmd)?;
        let stderr = g.child_mut().stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.dns_log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("started") {
                    let _ = tx.send(());
                }
                let mut l = log.lock().unwrap();
                if l.len() < 100_000 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            return Err(io::Error::other(format!(
                "dnsmasq did not start; output:\n{}",
                self.dns_log.lock().unwrap()
            )));
        }
        self.dns = Some(g);
        Ok(())
    }

    /// Stops the DNS server (queries then time out or are refused).
    pub fn stop_dns(&mut self) {
        if let Some(mut g) = self.dns.take() {
            g.kill();
        }
    }

    /// The DNS server's log so far.
    pub fn dns_log(&self) -> String {
        self.dns_log.lock().unwrap().clone()
    }

    fn erl_spec(
        &self,
        pod_ipv4: Ipv4Addr,
        pod_ipv6: Ipv6Addr,
        hostname: &str,
    ) -> io::Result<ErlSpec> {
        let c = &self.config;
        let (host, inetrc, ipv6) = match c.naming {
            Naming::Ipv4 => (pod_ipv4.to_string(), None, false),
            Naming::Ipv6 => (pod_ipv6.to_string(), None, true),
            Naming::Hostname => {
                let path = self.dir.join("inetrc");
                let (a, b) = self.net;
                std::fs::write(
                    &path,
                    format!(
                        "{{resolv_conf, \"\"}}.\n{{hosts_file, \"\"}}.\n{{lookup, [dns]}}.\n{{nameserver, {{10,{a},{b},2}}, 53}}.\n"
                    ),
                )?;
                (hostname.to_owned(), Some(path), false)
            }
        };
        Ok(ErlSpec {
            name: format!("{}@{host}", c.basename),
            cookie: c.cookie.clone(),
            epmd_port: c.epmd_port,
            dist_port: c.dist_port,
            net_ticktime: c.net_ticktime,
            inetrc,
            ipv6,
        })
    }

    /// Adds `n` pods (namespaces, epmd, erl nodes started in parallel),
    /// publishes them in DNS and returns their indexes.
    pub fn add_pods(&mut self, n: usize) -> io::Result<Vec<u32>> {
        self.add(n, true)
    }

    /// Adds `n` bare pods: namespace, addresses, DNS records and an epmd on
    /// the bed's port, but no erl node; run your own node inside with
    /// [`net::spawn_in_netns`] (e.g. an in-process Rust node), named
    /// [`Pod::node_name`].
    pub fn add_bare_pods(&mut self, n: usize) -> io::Result<Vec<u32>> {
        self.add(n, false)
    }

    fn add(&mut self, n: usize, with_erl: bool) -> io::Result<Vec<u32>> {
        self.make_room(self.pods.len() + n)?;
        let mut staged = Vec::new();
        for _ in 0..n {
            let index = self.next_index;
            if index > 240 {
                return Err(io::Error::other(
                    "a bed holds at most 240 pods over its life",
                ));
            }
            self.next_index += 1;
            let (a, b) = self.net;
            let ns = format!("{}-p{index}", self.id);
            let veth = format!("{}-{index}", self.id);
            let v4 = Ipv4Addr::new(10, a, b, 10 + index as u8);
            let v6 = self.v6(10 + index);
            self.attach(&ns, &veth, v4, v6)?;
            let hostname = format!("{}-{index}.{}", self.config.pod_prefix, self.service_fqdn());
            let spec = self.erl_spec(v4, v6, &hostname)?;
            let mut epmd_cmd = in_netns(&ns, &self.config.epmd_program);
            epmd_cmd
                .args(["-port", &self.config.epmd_port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let epmd = Guard::spawn(&mut epmd_cmd)?;
            staged.push((index, ns, veth, v4, v6, hostname, spec, epmd));
        }
        // Host records first, so Hostname-named nodes resolve each other.
        let runtime = &self.config.erl;
        let started: Vec<io::Result<Option<PodErl>>> = std::thread::scope(|s| {
            let hs: Vec<_> = staged
                .iter()
                .map(|(_, ns, _, _, _, _, spec, _)| {
                    s.spawn(move || {
                        // epmd needs a moment to listen.
                        std::thread::sleep(Duration::from_millis(100));
                        if with_erl {
                            PodErl::start_with(ns, spec, runtime).map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("erl start thread"))
                .collect()
        });
        let mut indexes = Vec::new();
        let mut first_err = None;
        for ((index, ns, veth, ipv4, ipv6, hostname, spec, epmd), erl) in
            staged.into_iter().zip(started)
        {
            match erl {
                Ok(erl) => {
                    self.pods.insert(
                        index,
                        Pod {
                            index,
                            netns: ns,
                            veth,
                            ipv4,
                            ipv6,
                            hostname,
                            node_name: spec.name,
                            published: true,
                            erl: erl.map(Arc::new),
                            view: None,
                            epmd,
                        },
                    );
                    indexes.push(index);
                }
                Err(e) => {
                    drop(epmd);
                    net::netns_delete(&ns);
                    first_err.get_or_insert(e);
                }
            }
        }
        self.write_dns_files()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(indexes),
        }
    }

    /// Raises the kernel's neighbour-table thresholds so a bed of `pods`
    /// pods has an entry for every pair (the table is shared by all
    /// namespaces; the old values come back when the bed is dropped). Beds
    /// of up to 40 pods fit the defaults and change nothing.
    fn make_room(&mut self, pods: usize) -> io::Result<()> {
        if pods <= 40 || self.neighbour_limits.is_some() {
            return Ok(());
        }
        let pods = pods as u64;
        self.neighbour_limits = sys::NeighbourLimits::ensure((pods + 2) * (pods + 2) + 1024)?;
        Ok(())
    }

    /// The pod with this index.
    pub fn pod(&self, index: u32) -> &Pod {
        self.pods
            .get(&index)
            .unwrap_or_else(|| panic!("no pod {index}"))
    }

    /// Every live pod.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// Indexes of every live pod.
    pub fn indexes(&self) -> Vec<u32> {
        self.pods.keys().copied().collect()
    }

    /// Removes the pod from the Service's DNS records (not ready /
    /// terminating) without stopping it.
    pub fn unpublish(&mut self, index: u32) -> io::Result<()> {
        if let Some(p) = self.pods.get_mut(&index) {
            p.published = false;
        }
        self.write_dns_files()
    }

    /// Lists the pod in the Service's DNS records again.
    pub fn publish(&mut self, index: u32) -> io::Result<()> {
        if let Some(p) = self.pods.get_mut(&index) {
            p.published = true;
        }
        self.write_dns_files()
    }

    /// Tells the bed how to read a bare pod's connected nodes.
    pub fn set_view(&mut self, index: u32, view: View) {
        if let Some(p) = self.pods.get_mut(&index) {
            p.view = Some(view);
        }
    }

    /// Sets whether each pod is listed in the Service's records, in one DNS
    /// update (so they all become resolvable at the same moment).
    pub fn set_published(&mut self, indexes: &[u32], published: bool) -> io::Result<()> {
        for i in indexes {
            if let Some(p) = self.pods.get_mut(i) {
                p.published = published;
            }
        }
        self.write_dns_files()
    }

    /// Kills the pod (SIGKILL to its processes: a crash), deletes its
    /// namespace and its DNS records.
    pub fn kill_pod(&mut self, index: u32) -> io::Result<()> {
        if let Some(p) = self.pods.remove(&index) {
            p.destroy();
        }
        self.write_dns_files()
    }

    /// Cuts the pod off the network (its veth down).
    pub fn partition(&self, index: u32) -> io::Result<()> {
        ip(&["link", "set", &self.pod(index).veth, "down"]).map(|_| ())
    }

    /// Reconnects a partitioned pod.
    pub fn heal(&self, index: u32) -> io::Result<()> {
        ip(&["link", "set", &self.pod(index).veth, "up"]).map(|_| ())
    }

    /// Cuts every pod of `a` off every pod of `b` and back: blackhole
    /// routes to the other side's IPv4 and IPv6 addresses inside each pod's
    /// namespace, so their traffic is dropped while each side (and DNS)
    /// stays reachable. Nothing outside the bed's namespaces is touched.
    pub fn cut(&self, a: &[u32], b: &[u32]) -> io::Result<()> {
        self.cut_routes("add", a, b)
    }

    /// Removes the routes of [`Bed::cut`].
    pub fn mend(&self, a: &[u32], b: &[u32]) -> io::Result<()> {
        self.cut_routes("del", a, b)
    }

    fn cut_routes(&self, op: &str, a: &[u32], b: &[u32]) -> io::Result<()> {
        for (from, to) in a
            .iter()
            .flat_map(|x| b.iter().map(move |y| (*x, *y)))
            .chain(b.iter().flat_map(|y| a.iter().map(move |x| (*y, *x))))
        {
            let (ns, peer) = (&self.pod(from).netns, self.pod(to));
            ip(&[
                "-n",
                ns,
                "route",
                op,
                "blackhole",
                &format!("{}/32", peer.ipv4),
            ])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "route",
                op,
                "blackhole",
                &format!("{}/128", peer.ipv6),
            ])?;
        }
        Ok(())
    }

    /// A command that runs inside the pod's namespace.
    pub fn exec(&self, index: u32, program: &str) -> Command {
        in_netns(&self.pod(index).netns, program)
    }

    /// Runs `dig`-less DNS checks: the command output of `program args`
    /// inside the DNS namespace (debugging aid).
    pub fn run_in_dns_ns(&self, program: &str, args: &[&str]) -> io::Result<String> {
        run(in_netns(&self.dns_ns, program).args(args))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let pods: Vec<u32> = self.pods.keys().copied().collect();
        for i in pods {
            if let Some(p) = self.pods.remove(&i) {
                p.destroy();
            }
        }
        self.stop_dns();
        // The host-side veth goes at once; a deleted namespace's own links
        // go when the kernel gets to it.
        let _ = ip(&["link", "delete", &format!("{}-d", self.id)]);
        net::netns_delete(&self.dns_ns);
        let _ = ip(&["link", "delete", &self.bridge]);
        remove_links_with_prefix(&self.id);
        let _ = std::fs::remove_dir_all(&self.dir);
        SUBNETS.lock().unwrap().retain(|s| *s != self.net);
    }
}

/// Deletes this bed's links still in the root namespace until none is left.
/// A deleted namespace takes its veth ends with it only when the kernel gets
/// to it, and an `ip link delete` can fail while the peer end is going away,
/// so one attempt is not enough on a loaded machine.
fn remove_links_with_prefix(id: &str) {
    let prefix = format!("{id}-");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left: Vec<String> = net::link_list()
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for link in &left {
            let _ = ip(&["link", "delete", link]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
