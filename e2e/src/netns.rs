//! Network namespaces for the `e2e/hosts` suite: one namespace per host, each
//! with its own address from 192.0.2.0/24 (TEST-NET-1) on a veth whose other
//! end sits on a bridge inside a dedicated namespace, so nothing of ours
//! touches the root namespace's links or firewall.
//!
//! Faults use the kernel's own tools: a bridge port set down (a dead link),
//! and `iptables` rules inside a host's namespace (isolation, one-way cuts,
//! random loss with the `statistic` match; this kernel has no `netem`).
//!
//! Names are `dle2e-<pid>-<n>-…`. [`Network`] deletes its namespaces on drop,
//! panics included, and [`Network::create`] first sweeps namespaces left by
//! test processes that no longer run.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Every namespace this harness makes starts with this.
pub const NAME_PREFIX: &str = "dle2e-";
/// The most hosts one network holds (addresses .11 to .11 + HOSTS_MAX - 1).
pub const HOSTS_MAX: usize = 32;
/// The interface name of a host's end of its veth.
const HOST_INTERFACE: &str = "eth0";
/// The bridge's name inside the bridge namespace.
const BRIDGE: &str = "br0";
/// `iptables` front ends tried in order; the first that lists rules inside a
/// fresh namespace wins (both nft and legacy work on the CI kernel).
const IPTABLES_CANDIDATES: [&str; 3] = ["iptables", "iptables-nft", "iptables-legacy"];

static NEXT_NETWORK: AtomicUsize = AtomicUsize::new(0);

/// One host: a namespace and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The namespace name (`ip netns` name).
    pub namespace: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// Its veth's name inside the bridge namespace.
    bridge_port: String,
}

/// A bridge and hosts attached to it; everything is removed on drop.
#[derive(Debug)]
pub struct Network {
    bridge_namespace: String,
    hosts: Vec<Host>,
    iptables: String,
}

impl Network {
    /// Creates a bridge namespace and `host_count` host namespaces, each
    /// reachable from the others at its own address.
    ///
    /// # Errors
    /// [`Error::Netns`] when namespaces, links or iptables cannot be set up
    /// (not root, no `ip`, no `iptables`): what was made is removed again.
    pub fn create(host_count: usize) -> Result<Self> {
        assert!(
            (1..=HOSTS_MAX).contains(&host_count),
            "host_count {host_count} outside 1..={HOSTS_MAX}"
        );
        sweep_stale();
        let prefix = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NEXT_NETWORK.fetch_add(1, Ordering::Relaxed)
        );
        let mut network = Self {
            bridge_namespace: format!("{prefix}-br"),
            hosts: Vec::new(),
            iptables: String::new(),
        };
        // From here on, drop removes whatever was made if a step fails.
        network.build(&prefix, host_count)?;
        Ok(network)
    }

    fn build(&mut self, prefix: &str, host_count: usize) -> Result<()> {
        let bridge = self.bridge_namespace.clone();
        run(&["ip", "netns", "add", &bridge])?;
        run(&["ip", "-n", &bridge, "link", "add", BRIDGE, "type", "bridge"])?;
        run(&["ip", "-n", &bridge, "link", "set", BRIDGE, "up"])?;
        for index in 0..host_count {
            let host = Host {
                namespace: format!("{prefix}-h{index}"),
                address: host_address(index),
                bridge_port: format!("v{index}"),
            };
            run(&["ip", "netns", "add", &host.namespace])?;
            self.hosts.push(host.clone());
            run(&[
                "ip",
                "-n",
                &bridge,
                "link",
                "add",
                &host.bridge_port,
                "type",
                "veth",
                "peer",
                "name",
                HOST_INTERFACE,
                "netns",
                &host.namespace,
            ])?;
            run(&[
                "ip",
                "-n",
                &bridge,
                "link",
                "set",
                &host.bridge_port,
                "master",
                BRIDGE,
            ])?;
            run(&["ip", "-n", &bridge, "link", "set", &host.bridge_port, "up"])?;
            let cidr = format!("{}/24", host.address);
            run(&[
                "ip",
                "-n",
                &host.namespace,
                "addr",
                "add",
                &cidr,
                "dev",
                HOST_INTERFACE,
            ])?;
            run(&[
                "ip",
                "-n",
                &host.namespace,
                "link",
                "set",
                HOST_INTERFACE,
                "up",
            ])?;
            run(&["ip", "-n", &host.namespace, "link", "set", "lo", "up"])?;
        }
        self.iptables = find_iptables(&self.hosts[0].namespace)?;
        Ok(())
    }

    /// The hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index`.
    ///
    /// # Panics
    /// When `index` is not a host of this network (a broken test).
    pub fn host(&self, index: usize) -> &Host {
        self.hosts
            .get(index)
            .unwrap_or_else(|| panic!("no host {index} among {}", self.hosts.len()))
    }

    /// The namespace names, bridge included (for checks that they are gone).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts.iter().map(|h| h.namespace.clone()).collect();
        names.push(self.bridge_namespace.clone());
        names
    }

    /// The `iptables` front end in use.
    pub fn iptables(&self) -> &str {
        &self.iptables
    }

    /// Cuts host `index` off from every other host, both ways (its own
    /// processes still reach each other over its own address).
    ///
    /// # Errors
    /// [`Error::Netns`] when iptables fails.
    pub fn isolate(&self, index: usize) -> Result<()> {
        self.iptables_in(index, &["-A", "INPUT", "-i", HOST_INTERFACE, "-j", "DROP"])?;
        self.iptables_in(index, &["-A", "OUTPUT", "-o", HOST_INTERFACE, "-j", "DROP"])
    }

    /// Drops every packet from host `from` to host `to`; the other direction
    /// still flows.
    ///
    /// # Errors
    /// [`Error::Netns`] when iptables fails.
    pub fn block_one_way(&self, from: usize, to: usize) -> Result<()> {
        let destination = self.host(to).address.to_string();
        self.iptables_in(from, &["-A", "OUTPUT", "-d", &destination, "-j", "DROP"])
    }

    /// Drops each packet arriving at host `index` with probability `probability`.
    ///
    /// # Errors
    /// [`Error::Netns`] when iptables fails.
    pub fn random_loss(&self, index: usize, probability: f64) -> Result<()> {
        assert!(
            (0.0..=1.0).contains(&probability),
            "loss probability {probability} outside 0..=1"
        );
        let probability = format!("{probability}");
        self.iptables_in(
            index,
            &[
                "-A",
                "INPUT",
                "-i",
                HOST_INTERFACE,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )
    }

    /// Removes every iptables rule of host `index`.
    ///
    /// # Errors
    /// [`Error::Netns`] when iptables fails.
    pub fn heal(&self, index: usize) -> Result<()> {
        self.iptables_in(index, &["-F"])
    }

    /// Removes every iptables rule of every host and brings every link up.
    ///
    /// # Errors
    /// [`Error::Netns`] on the first command that fails.
    pub fn heal_all(&self) -> Result<()> {
        for index in 0..self.hosts.len() {
            self.heal(index)?;
            self.set_link(index, true)?;
        }
        Ok(())
    }

    /// Sets host `index`'s bridge port up or down (a link that dies or comes back).
    ///
    /// # Errors
    /// [`Error::Netns`] when `ip` fails.
    pub fn set_link(&self, index: usize, up: bool) -> Result<()> {
        let port = self.host(index).bridge_port.clone();
        let state = if up { "up" } else { "down" };
        run(&[
            "ip",
            "-n",
            &self.bridge_namespace,
            "link",
            "set",
            &port,
            state,
        ])
        .map(drop)
    }

    /// Makes `command` run inside host `index`'s namespace when spawned.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be opened.
    pub fn place(&self, index: usize, command: &mut Command) -> Result<()> {
        let file = open_namespace(&self.host(index).namespace)?;
        // SAFETY: setns is a single system call, async-signal-safe, and the
        // closure only touches the descriptor it owns.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }

    /// Runs `work` on a thread inside host `index`'s namespace and returns its result.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be entered.
    ///
    /// # Panics
    /// When `work` panics (the panic is passed on).
    pub fn run_in<T: Send>(&self, index: usize, work: impl FnOnce() -> T + Send) -> Result<T> {
        let namespace = self.host(index).namespace.clone();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter(&namespace)?;
                Ok(work())
            });
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Host `index`'s address with `port`.
    pub fn socket_address(&self, index: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.host(index).address.into(), port)
    }

    fn iptables_in(&self, index: usize, rule: &[&str]) -> Result<()> {
        let namespace = self.host(index).namespace.clone();
        let mut args = vec!["ip", "netns", "exec", &namespace, &self.iptables, "-w"];
        args.extend_from_slice(rule);
        run(&args).map(drop)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self.namespace_names() {
            if let Err(error) = run(&["ip", "netns", "delete", &name]) {
                if namespace_exists(&name) {
                    eprintln!("e2e: could not remove namespace {name}: {error}");
                }
            }
        }
    }
}

/// Moves the calling thread into namespace `name` (threads it spawns after
/// this inherit it; the rest of the process stays where it was).
///
/// # Errors
/// [`Error::Netns`] when the namespace cannot be opened or entered.
pub fn enter(name: &str) -> Result<()> {
    let file = open_namespace(name)?;
    // SAFETY: setns on a descriptor we own; it changes only this thread's
    // network namespace.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result == 0 {
        Ok(())
    } else {
        Err(Error::Netns {
            command: format!("setns({name})"),
            reason: std::io::Error::last_os_error().to_string(),
        })
    }
}

/// The names of all namespaces that exist now.
pub fn list_namespaces() -> Vec<String> {
    let Ok(output) = run(&["ip", "netns", "list"]) else {
        return Vec::new();
    };
    // Lines look like `name` or `name (id: 3)`.
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether namespace `name` exists.
pub fn namespace_exists(name: &str) -> bool {
    list_namespaces().iter().any(|listed| listed == name)
}

/// Removes namespaces with [`NAME_PREFIX`] whose creating process is gone
/// (left behind by a test run that was killed).
pub fn sweep_stale() {
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let pid = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            if let Err(error) = run(&["ip", "netns", "delete", &name]) {
                eprintln!("e2e: could not sweep stale namespace {name}: {error}");
            }
        }
    }
}

/// The address of host `index`: 192.0.2.11, .12, …
fn host_address(index: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + index).unwrap_or_else(|_| panic!("host index {index} too large"));
    Ipv4Addr::new(192, 0, 2, last)
}

fn open_namespace(name: &str) -> Result<File> {
    let path = format!("/var/run/netns/{name}");
    File::open(&path).map_err(|error| Error::Netns {
        command: format!("open {path}"),
        reason: error.to_string(),
    })
}

fn find_iptables(namespace: &str) -> Result<String> {
    let mut reasons = Vec::new();
    for candidate in IPTABLES_CANDIDATES {
        match run(&[
            "ip", "netns", "exec", namespace, candidate, "-w", "-L", "-n",
        ]) {
            Ok(_) => return Ok(candidate.to_owned()),
            Err(error) => reasons.push(error.to_string()),
        }
    }
    Err(Error::Netns {
        command: "iptables -L inside a namespace".to_owned(),
        reason: reasons.join("; "),
    })
}

fn run(args: &[&str]) -> Result<String> {
    let command_line = args.join(" ");
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|error| Error::Netns {
            command: command_line.clone(),
            reason: error.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Netns {
            command: command_line,
            reason: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Whether the suites must not skip: CI sets `CI=true`.
pub fn skipping_forbidden() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}
