//! Runs a group of `dledger-replica serve` processes: start, SIGKILL,
//! SIGSTOP/SIGCONT, SIGTERM, restart, wipe; either on loopback with free
//! ports, or one per host of a [`Network`].
//!
//! Each member's stdout and stderr go to `<dir>/<id>.log` (appended across
//! restarts); when a test panics, the tail of every log is printed and the
//! directory is kept for inspection.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::binary::replica_binary;
use crate::error::{Error, Result};
use crate::http::{Client, Status};
use crate::netns::Network;
use crate::wait::wait_until;

/// The group name every suite uses.
pub const GROUP: &str = "e2e";
/// The peer port on a namespace host (DESIGN.md's default).
pub const HOST_PEER_PORT: u16 = 20911;
/// The HTTP port on a namespace host (DESIGN.md's default).
pub const HOST_HTTP_PORT: u16 = 8080;
/// Time limit of a status request.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long SIGTERM is given before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// How long SIGSTOP or SIGCONT may take to show in /proc.
const SIGNAL_TAKES_EFFECT_WAIT: Duration = Duration::from_secs(2);
/// How many log bytes of each member are printed when a test fails.
const LOG_TAIL_BYTES: u64 = 6000;

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

/// One replica process and where it lives.
#[derive(Debug)]
pub struct Member {
    /// Its id (`DLEDGER_ID`).
    pub id: String,
    /// Its peer (framed TCP) address.
    pub peer_address: SocketAddr,
    /// Its HTTP address.
    pub http_address: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    host: Option<usize>,
    /// Whether it bootstraps the group (`--initial-state new`, `--peers`
    /// the bootstrap members) or waits to be added (`existing`, `--peers`
    /// every member, so it can reach the leader).
    bootstrap: bool,
}

/// A member's HTTP API and the namespace to reach it from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The member id.
    pub id: String,
    /// Its HTTP address.
    pub http_address: SocketAddr,
    /// The namespace that reaches it even under partitions (its own), if any.
    pub namespace: Option<String>,
}

/// A group of replica processes.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    binary: PathBuf,
    members: Vec<Member>,
    network: Option<Arc<Network>>,
    /// More `serve` flags every member starts with.
    serve_args: Vec<String>,
}

impl Cluster {
    /// Starts `size` members on 127.0.0.1 with free ports.
    ///
    /// # Errors
    /// When the binary is missing, ports cannot be reserved or a process cannot start.
    pub fn loopback(size: usize) -> Result<Self> {
        Self::loopback_with_binary(size, replica_binary()?)
    }

    /// Starts `size` members of `binary` (a stand-in, in the harness's own
    /// tests) on 127.0.0.1 with free ports.
    ///
    /// # Errors
    /// When ports cannot be reserved or a process cannot start.
    pub fn loopback_with_binary(size: usize, binary: PathBuf) -> Result<Self> {
        Self::loopback_spares(size, 0, binary, &[])
    }

    /// Starts `voters` members that bootstrap the group and `spares` more
    /// (the last ones) that wait to be added with `POST /admin/members`.
    ///
    /// # Errors
    /// As [`loopback`](Self::loopback).
    pub fn loopback_with_spares(voters: usize, spares: usize) -> Result<Self> {
        Self::loopback_spares(voters, spares, replica_binary()?, &[])
    }

    /// As [`loopback_with_spares`](Self::loopback_with_spares), every
    /// member started with the `serve` flags `serve_args` as well.
    ///
    /// # Errors
    /// As [`loopback`](Self::loopback).
    pub fn loopback_with_spares_and_flags(
        voters: usize,
        spares: usize,
        serve_args: &[&str],
    ) -> Result<Self> {
        Self::loopback_spares(voters, spares, replica_binary()?, serve_args)
    }

    fn loopback_spares(
        voters: usize,
        spares: usize,
        binary: PathBuf,
        serve_args: &[&str],
    ) -> Result<Self> {
        let size = voters + spares;
        let ports = free_ports(size * 2)?;
        let addresses: Vec<(SocketAddr, SocketAddr)> = (0..size)
            .map(|index| {
                let ip = Ipv4Addr::LOCALHOST.into();
                (
                    SocketAddr::new(ip, ports[index * 2]),
                    SocketAddr::new(ip, ports[index * 2 + 1]),
                )
            })
            .collect();
        let serve_args = serve_args.iter().map(|arg| arg.to_string()).collect();
        Self::launch(binary, addresses, None, voters, serve_args)
    }

    /// Starts one member on each host of `network`, at the default ports.
    ///
    /// # Errors
    /// When the binary is missing or a process cannot start.
    pub fn on_hosts(network: Arc<Network>) -> Result<Self> {
        let addresses = (0..network.hosts().len())
            .map(|index| {
                (
                    network.socket_address(index, HOST_PEER_PORT),
                    network.socket_address(index, HOST_HTTP_PORT),
                )
            })
            .collect();
        let hosts = network.hosts().len();
        Self::launch(
            replica_binary()?,
            addresses,
            Some(network),
            hosts,
            Vec::new(),
        )
    }

    fn launch(
        binary: PathBuf,
        addresses: Vec<(SocketAddr, SocketAddr)>,
        network: Option<Arc<Network>>,
        bootstrap_members: usize,
        serve_args: Vec<String>,
    ) -> Result<Self> {
        assert!(!addresses.is_empty(), "a cluster needs members");
        let dir = std::env::temp_dir().join(format!(
            "dledger-e2e-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        ));
        create_dir(&dir)?;
        let members = addresses
            .into_iter()
            .enumerate()
            .map(|(index, (peer_address, http_address))| {
                let id = format!("{GROUP}-{index}");
                Member {
                    data_dir: dir.join(&id),
                    log_path: dir.join(format!("{id}.log")),
                    id,
                    peer_address,
                    http_address,
                    child: None,
                    paused: false,
                    host: network.as_ref().map(|_| index),
                    bootstrap: index < bootstrap_members,
                }
            })
            .collect();
        let mut cluster = Self {
            dir,
            binary,
            members,
            network,
            serve_args,
        };
        for index in 0..cluster.size() {
            cluster.start(index)?;
        }
        Ok(cluster)
    }

    /// The `--group-id` every member starts with: one per cluster, as the
    /// operator gives each `DLedgerGroup` its uid.
    pub fn group_id(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Member `index`.
    ///
    /// # Panics
    /// When `index` is out of range (a broken test).
    pub fn member(&self, index: usize) -> &Member {
        self.members
            .get(index)
            .unwrap_or_else(|| panic!("no member {index} among {}", self.members.len()))
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|member| member.id == id)
    }

    /// The bootstrap members' list, `id=host:port,...`.
    pub fn peers_flag(&self) -> String {
        self.members
            .iter()
            .filter(|member| member.bootstrap)
            .map(|member| format!("{}={}", member.id, member.peer_address))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The HTTP addresses (for redirects) of the bootstrap members, or of
    /// every member, `id=host:port,...`.
    fn http_peers_flag(&self, bootstrap_only: bool) -> String {
        self.members
            .iter()
            .filter(|member| member.bootstrap || !bootstrap_only)
            .map(|member| format!("{}={}", member.id, member.http_address))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's peer address, `id=host:port,...`.
    fn all_peers_flag(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}={}", member.id, member.peer_address))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The network the members live on, when not loopback.
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.network.as_ref()
    }

    /// The namespace host of member `index`, when on a network.
    pub fn host_of(&self, index: usize) -> Option<usize> {
        self.member(index).host
    }

    /// Starts member `index` (which must not be running).
    ///
    /// # Errors
    /// [`Error::Process`] when it cannot be spawned.
    pub fn start(&mut self, index: usize) -> Result<()> {
        let (peers, initial_state) = if self.member(index).bootstrap {
            (self.peers_flag(), "new")
        } else {
            (self.all_peers_flag(), "existing")
        };
        let http_peers = self.http_peers_flag(initial_state == "new");
        let binary = self.binary.clone();
        let network = self.network.clone();
        let serve_args = self.serve_args.clone();
        let group_id = self.group_id();
        let member = self
            .members
            .get_mut(index)
            .unwrap_or_else(|| panic!("no member {index}"));
        assert!(member.child.is_none(), "{} is already running", member.id);
        create_dir(&member.data_dir)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(|source| Error::Io {
                path: member.log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| Error::Io {
            path: member.log_path.clone(),
            source,
        })?;
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .args(["--group", GROUP])
            .args(["--group-id", &group_id])
            .args(["--id", &member.id])
            .args(["--peers", &peers])
            .args(["--initial-state", initial_state])
            .args(["--http-peers", &http_peers])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen", &member.peer_address.to_string()])
            .args(["--http-listen", &member.http_address.to_string()])
            .args(&serve_args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let (Some(network), Some(host)) = (network, member.host) {
            network.place(host, &mut command)?;
        }
        let child = command.spawn().map_err(|source| Error::Process {
            member: member.id.clone(),
            source,
        })?;
        member.child = Some(child);
        member.paused = false;
        Ok(())
    }

    /// Starts member `index` (which must not be running) to join the group
    /// as it is now (`--initial-state existing`), as a member whose data
    /// directory was lost must: with an empty one it is a new incarnation
    /// that waits to be added.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_joining(&mut self, index: usize) -> Result<()> {
        let was_bootstrap = self.member(index).bootstrap;
        self.members[index].bootstrap = false;
        let started = self.start(index);
        // It stays in the bootstrap list the others were started with.
        self.members[index].bootstrap = was_bootstrap;
        started
    }

    /// `kill -9` member `index` and reaps it.
    ///
    /// # Errors
    /// [`Error::Process`] when signalling or waiting fails.
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            child.kill().map_err(|source| Error::Process {
                member: member.id.clone(),
                source,
            })?;
            child.wait().map_err(|source| Error::Process {
                member: member.id.clone(),
                source,
            })?;
        }
        member.paused = false;
        Ok(())
    }

    /// SIGSTOP member `index`: it stays alive but does nothing.
    ///
    /// # Errors
    /// [`Error::Process`] when it is not running or the signal fails.
    pub fn pause(&mut self, index: usize) -> Result<()> {
        self.signal(index, libc::SIGSTOP)?;
        self.members[index].paused = true;
        // Signals arrive asynchronously: return only once it is stopped, so
        // that a test's "stopped for N ms" is true.
        self.wait_for_state(index, "stopped", |state| state == Some("T"))
    }

    /// SIGCONT member `index`.
    ///
    /// # Errors
    /// [`Error::Process`] when it is not running or the signal fails.
    pub fn resume(&mut self, index: usize) -> Result<()> {
        self.signal(index, libc::SIGCONT)?;
        self.members[index].paused = false;
        self.wait_for_state(index, "resumed", |state| state != Some("T"))
    }

    fn wait_for_state(
        &self,
        index: usize,
        what: &str,
        reached: impl Fn(Option<&str>) -> bool,
    ) -> Result<()> {
        let member = &self.members[index];
        let Some(pid) = member.child.as_ref().map(Child::id) else {
            return Ok(());
        };
        wait_until(
            &format!("{} to be {what}", member.id),
            SIGNAL_TAKES_EFFECT_WAIT,
            || reached(process_state(pid).as_deref()).then_some(()),
        )
    }

    /// SIGTERM member `index` and waits for it to exit; SIGKILL after a grace
    /// period. Returns whether it exited by itself within the grace.
    ///
    /// # Errors
    /// [`Error::Process`] when signalling or waiting fails.
    pub fn terminate(&mut self, index: usize) -> Result<bool> {
        if self.members[index].child.is_none() {
            return Ok(true);
        }
        if self.members[index].paused {
            self.resume(index)?;
        }
        self.signal(index, libc::SIGTERM)?;
        let member = &mut self.members[index];
        let Some(mut child) = member.child.take() else {
            return Ok(true);
        };
        let started = Instant::now();
        loop {
            let exited = child.try_wait().map_err(|source| Error::Process {
                member: member.id.clone(),
                source,
            })?;
            if exited.is_some() {
                return Ok(true);
            }
            if started.elapsed() > TERMINATE_GRACE {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM then start again.
    ///
    /// # Errors
    /// As [`Cluster::terminate`] and [`Cluster::start`].
    pub fn restart(&mut self, index: usize) -> Result<()> {
        self.terminate(index)?;
        self.start(index)
    }

    /// Removes member `index`'s data directory (it must be stopped).
    ///
    /// # Errors
    /// [`Error::Io`] when removal fails.
    pub fn wipe(&mut self, index: usize) -> Result<()> {
        let member = &self.members[index];
        assert!(member.child.is_none(), "wipe {} while it runs", member.id);
        match std::fs::remove_dir_all(&member.data_dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                path: member.data_dir.clone(),
                source,
            }),
        }
    }

    /// Whether member `index` has a live process (paused counts as live).
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].child.is_some()
    }

    /// The pid of member `index`'s process, when running.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].child.as_ref().map(Child::id)
    }

    /// The path of member `index`'s log file.
    pub fn log_path(&self, index: usize) -> &Path {
        &self.members[index].log_path
    }

    /// Member `index`'s data directory.
    pub fn data_dir(&self, index: usize) -> &Path {
        &self.members[index].data_dir
    }

    /// Checks that every member supposed to run still does.
    ///
    /// # Errors
    /// [`Error::Process`] naming the first one that exited on its own, with its status.
    pub fn check_alive(&mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                let exited = child.try_wait().map_err(|source| Error::Process {
                    member: member.id.clone(),
                    source,
                })?;
                if let Some(status) = exited {
                    return Err(Error::Process {
                        member: member.id.clone(),
                        source: std::io::Error::other(format!("exited on its own: {status}")),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs `work` with a client of member `index`, from where that member can
    /// always be reached: the member's own namespace when on a network.
    ///
    /// # Errors
    /// What `work` returns, or [`Error::Netns`] when the namespace cannot be entered.
    pub fn with_client<T: Send>(
        &self,
        index: usize,
        timeout: Duration,
        work: impl FnOnce(&Client) -> Result<T> + Send,
    ) -> Result<T> {
        let member = self.member(index);
        let address = member.http_address;
        match (&self.network, member.host) {
            (Some(network), Some(host)) => {
                network.run_in(host, move || work(&Client::new(address, timeout)))?
            }
            _ => work(&Client::new(address, timeout)),
        }
    }

    /// `GET /status` of member `index`.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub fn status(&self, index: usize) -> Result<Status> {
        self.with_client(index, STATUS_TIMEOUT, Client::status)
    }

    /// The status of every member, `None` where it did not answer.
    pub fn statuses(&self) -> Vec<Option<Status>> {
        (0..self.size())
            .map(|index| {
                if self.is_running(index) && !self.members[index].paused {
                    self.status(index).ok()
                } else {
                    None
                }
            })
            .collect()
    }

    /// Waits until a leader is established: a member says it leads in term T
    /// and a majority of members are in term T and name it. Returns its index and T.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none is established within `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<(usize, u64)> {
        self.wait_for_leader_where("an established leader", timeout, |_| true)
    }

    /// Waits until a leader other than member `old` is established.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none is established within `timeout`.
    pub fn wait_for_new_leader(&self, old: usize, timeout: Duration) -> Result<(usize, u64)> {
        self.wait_for_leader_where("a new leader", timeout, |index| index != old)
    }

    /// Waits for an established leader accepted by `wanted`; gives up at once
    /// when a member that should run has exited (a crash, or no server at all).
    fn wait_for_leader_where(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(usize) -> bool,
    ) -> Result<(usize, u64)> {
        wait_until(what, timeout, || {
            if let Some(exited) = self.first_exited() {
                return Some(Err(Error::Process {
                    member: exited,
                    source: std::io::Error::other(format!(
                        "exited while waiting for {what}; see its log in {}",
                        self.dir.display()
                    )),
                }));
            }
            established_leader(&self.statuses(), |id| self.index_of(id))
                .filter(|(index, _)| wanted(*index))
                .map(Ok)
        })?
    }

    /// The id of the first member that should be running but has exited
    /// (a zombie not yet reaped, seen through /proc without needing `&mut`).
    pub fn first_exited(&self) -> Option<String> {
        self.members.iter().find_map(|member| {
            let pid = member.child.as_ref()?.id();
            let state = process_state(pid);
            matches!(state.as_deref(), None | Some("Z") | Some("X")).then(|| member.id.clone())
        })
    }

    /// Where each member's HTTP API is and which namespace reaches it, for
    /// threads that run beside the test (monitors, loads).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.members
            .iter()
            .map(|member| Endpoint {
                id: member.id.clone(),
                http_address: member.http_address,
                namespace: match (&self.network, member.host) {
                    (Some(network), Some(host)) => Some(network.host(host).namespace.clone()),
                    _ => None,
                },
            })
            .collect()
    }

    /// The HTTP addresses of all members.
    pub fn http_addresses(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|member| member.http_address)
            .collect()
    }

    /// The test directory (data directories and logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Prints the tail of every member's log to stderr.
    pub fn dump_logs(&self) {
        for member in &self.members {
            eprintln!(
                "===== {} ({}) last {LOG_TAIL_BYTES} bytes =====",
                member.id,
                member.log_path.display()
            );
            eprintln!("{}", tail(&member.log_path, LOG_TAIL_BYTES));
        }
    }

    fn signal(&self, index: usize, signal: libc::c_int) -> Result<()> {
        let member = &self.members[index];
        let Some(child) = member.child.as_ref() else {
            return Err(Error::Process {
                member: member.id.clone(),
                source: std::io::Error::other("not running"),
            });
        };
        let pid = libc::pid_t::try_from(child.id())
            .unwrap_or_else(|_| panic!("pid {} does not fit pid_t", child.id()));
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it
        // cannot name a recycled process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(Error::Process {
                member: member.id.clone(),
                source: std::io::Error::last_os_error(),
            })
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for index in 0..self.members.len() {
            if self.members[index].paused {
                let _ = self.signal(index, libc::SIGCONT);
            }
            let _ = self.kill(index);
        }
        if failing {
            self.dump_logs();
            eprintln!("e2e: kept {} for inspection", self.dir.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("e2e: could not remove {}: {error}", self.dir.display());
        }
    }
}

/// The established leader in `statuses`: it says it leads in term T, and a
/// majority of all members report term T with it as leader.
pub fn established_leader(
    statuses: &[Option<Status>],
    index_of: impl Fn(&str) -> Option<usize>,
) -> Option<(usize, u64)> {
    let majority = statuses.len() / 2 + 1;
    statuses
        .iter()
        .flatten()
        .filter(|s| s.is_leader())
        .find_map(|leader| {
            let agreeing = statuses
                .iter()
                .flatten()
                .filter(|s| s.term == leader.term && s.leader_id.as_deref() == Some(&leader.id))
                .count();
            (agreeing >= majority)
                .then(|| index_of(&leader.id).map(|index| (index, leader.term)))
                .flatten()
        })
}

/// The state letter of process `pid` (R, S, T, Z, ...) from /proc, if it exists.
pub fn process_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state is the field after the parenthesised command name.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_owned)
}

fn free_ports(count: usize) -> Result<Vec<u16>> {
    // Held together so that no two are the same; released just before use.
    let listeners = (0..count)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|address| address.port())
                .map_err(|source| Error::Io {
                    path: PathBuf::from("127.0.0.1:0"),
                    source,
                })
        })
        .collect()
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return "(no log)".to_owned();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(bytes)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, role: &str, term: u64, leader: Option<&str>) -> Option<Status> {
        Some(Status {
            group: GROUP.to_owned(),
            id: id.to_owned(),
            role: role.to_owned(),
            term,
            leader_id: leader.map(str::to_owned),
            first_index: 1,
            last_index: 0,
            last_term: 0,
            commit_index: 0,
            incarnation: 0,
            certificate_not_after_s: None,
        })
    }

    fn index_of(id: &str) -> Option<usize> {
        id.strip_prefix("n").and_then(|n| n.parse().ok())
    }

    #[test]
    fn a_leader_needs_a_majority_in_its_term() {
        let agreed = [
            status("n0", "leader", 3, Some("n0")),
            status("n1", "follower", 3, Some("n0")),
            None,
        ];
        assert_eq!(established_leader(&agreed, index_of), Some((0, 3)));
        // An isolated old leader next to a majority that moved on.
        let split = [
            status("n0", "leader", 3, Some("n0")),
            status("n1", "leader", 4, Some("n1")),
            status("n2", "follower", 4, Some("n1")),
        ];
        assert_eq!(established_leader(&split, index_of), Some((1, 4)));
        let alone = [status("n0", "leader", 3, Some("n0")), None, None];
        assert_eq!(established_leader(&alone, index_of), None);
    }
}
