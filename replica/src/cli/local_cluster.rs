//! `dledger-replica local-cluster`: a replica group on loopback, each member
//! a child process running `serve`, its data under one directory. Shows who
//! leads and each member's indexes as they change; Ctrl-C stops them all.
//! The `bench` subcommand starts one the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::serve::FlushModeArg;
use crate::admin_client::{AdminClient, ClientTls, Credentials};
use crate::api::{Role, Status};
use crate::certs::Ca;
use crate::net::tls::{Tls, TlsFiles};

/// Start a replica group on loopback and watch it.
#[derive(Clone, Debug, Args)]
pub struct LocalClusterArgs {
    /// How many replicas (1 to 7; odd numbers tolerate the most failures).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=7))]
    pub replicas: u16,

    /// Parent directory of the members' data directories and logs.
    #[arg(long, default_value = "dledger-local")]
    pub data_dir: PathBuf,

    /// The group name.
    #[arg(long, default_value = "local")]
    pub group: String,

    /// Binary protocol port of the first member; the others follow it.
    #[arg(long, default_value_t = 20911)]
    pub base_port: u16,

    /// HTTP port of the first member; the others follow it.
    #[arg(long, default_value_t = 18080)]
    pub http_base_port: u16,

    /// `durable` (fdatasync before acknowledging) or the weaker `page-cache`.
    #[arg(long, value_enum, default_value_t = FlushModeArg::Durable)]
    pub flush_mode: FlushModeArg,

    /// Append this many small entries per second to the group (0: none), to
    /// watch the indexes move.
    #[arg(long, default_value_t = 0)]
    pub writes_per_s: u32,

    /// Mutual TLS between the members, TLS for clients and HTTPS, with a
    /// throwaway CA made at start and written under `<data-dir>/tls/`
    /// (`client.crt` and `client.key` for applications, `admin.crt` and
    /// `admin.key` naming `dledger-operator`, `ca.crt`). Without it the
    /// group is plaintext and unauthenticated.
    #[arg(long)]
    pub tls: bool,
}

/// The credentials of a local group with `--tls`.
struct LocalTls {
    /// Each member's files, in member order.
    members: Vec<TlsFiles>,
    /// An application's certificate (write right).
    client: TlsFiles,
    /// The admin client's contents (a certificate naming `dledger-operator`).
    admin: Credentials,
}

impl LocalTls {
    /// A CA and certificates for `members` under `dir`.
    fn make(dir: &Path, group: &str, members: &[LocalMember]) -> std::io::Result<LocalTls> {
        std::fs::create_dir_all(dir)?;
        let invalid = |err: crate::certs::CertError| std::io::Error::other(err.to_string());
        let (ca, _) = Ca::new(group, 30).map_err(invalid)?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.cert_pem())?;
        let write = |file: &str, names: &[&str]| -> std::io::Result<TlsFiles> {
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            let (cert, key) = ca.issue(&names, 30).map_err(invalid)?.write(dir, file)?;
            Ok(TlsFiles {
                cert,
                key,
                ca: ca_path.clone(),
            })
        };
        let member_files = members
            .iter()
            .map(|member| write(&member.id, &[&member.id, "127.0.0.1", "localhost"]))
            .collect::<std::io::Result<Vec<_>>>()?;
        let client = write("client", &["local-client"])?;
        let admin = write("admin", &["dledger-operator"])?;
        let admin = Credentials {
            tls: Some(
                ClientTls::read(&ca_path, Some((&admin.cert, &admin.key)))
                    .map_err(std::io::Error::other)?,
            ),
            token: None,
        };
        Ok(LocalTls {
            members: member_files,
            client,
            admin,
        })
    }
}

/// One member of a local group.
pub struct LocalMember {
    /// Its id, `node-<i>`.
    pub id: String,
    /// Its binary protocol address.
    pub tcp_address: String,
    /// Its HTTP address.
    pub http_address: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// When its current process was started.
    started: Option<Instant>,
}

/// A running local group; dropping it kills the members.
pub struct LocalCluster {
    /// The members in id order.
    pub members: Vec<LocalMember>,
    /// The group name.
    pub group: String,
    binary: PathBuf,
    logs_dir: PathBuf,
    peers: String,
    http_peers: String,
    flush_mode: &'static str,
    tls: Option<LocalTls>,
}

impl LocalCluster {
    /// Starts `args.replicas` members of `binary serve`.
    pub fn start(binary: &Path, args: &LocalClusterArgs) -> std::io::Result<LocalCluster> {
        std::fs::create_dir_all(&args.data_dir)?;
        let members: Vec<LocalMember> = (0..args.replicas)
            .map(|i| LocalMember {
                id: format!("node-{i}"),
                tcp_address: format!("127.0.0.1:{}", args.base_port + i),
                http_address: format!("127.0.0.1:{}", args.http_base_port + i),
                data_dir: args.data_dir.join(format!("node-{i}")),
                child: None,
                started: None,
            })
            .collect();
        let flush_mode = match args.flush_mode {
            FlushModeArg::Durable => "durable",
            FlushModeArg::PageCache => "page-cache",
        };
        let tls = if args.tls {
            Some(LocalTls::make(
                &args.data_dir.join("tls"),
                &args.group,
                &members,
            )?)
        } else {
            None
        };
        let mut cluster = LocalCluster {
            tls,
            peers: join(&members, |m| &m.tcp_address),
            http_peers: join(&members, |m| &m.http_address),
            members,
            group: args.group.clone(),
            binary: binary.to_path_buf(),
            logs_dir: args.data_dir.clone(),
            flush_mode,
        };
        for index in 0..cluster.members.len() {
            cluster.start_member(index)?;
        }
        Ok(cluster)
    }

    /// (Re)starts member `index` on its data directory; its output is
    /// appended to `<data dir>/<id>.log`.
    pub fn start_member(&mut self, index: usize) -> std::io::Result<()> {
        let member = &self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs_dir.join(format!("{}.log", member.id)))?;
        let child = Command::new(&self.binary)
            .args(self.serve_args(index))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.members[index].child = Some(child);
        self.members[index].started = Some(Instant::now());
        Ok(())
    }

    /// The arguments member `index` runs `serve` with.
    fn serve_args(&self, index: usize) -> Vec<String> {
        let member = &self.members[index];
        let mut args: Vec<String> = [
            "serve",
            "--group",
            &self.group,
            "--id",
            &member.id,
            "--peers",
            &self.peers,
            "--http-peers",
            &self.http_peers,
            "--data-dir",
            &member.data_dir.to_string_lossy(),
            "--listen",
            &member.tcp_address,
            "--http-listen",
            &member.http_address,
            "--flush-mode",
            self.flush_mode,
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        if let Some(tls) = &self.tls {
            let files = &tls.members[index];
            for (flag, path) in [
                ("--tls-cert", &files.cert),
                ("--tls-key", &files.key),
                ("--tls-ca", &files.ca),
            ] {
                args.push(flag.to_string());
                args.push(path.to_string_lossy().into_owned());
            }
        }
        args
    }

    /// An application's TLS files when the group runs with `--tls`.
    pub fn client_tls(&self) -> Option<TlsFiles> {
        self.tls.as_ref().map(|tls| tls.client.clone())
    }

    /// A client of member `address`'s HTTP API with admin rights (HTTPS
    /// and the admin certificate with `--tls`).
    pub fn admin_client(&self, address: &str, timeout: Duration) -> AdminClient {
        let credentials = self.admin_credentials();
        AdminClient::with_credentials(address, timeout, &credentials)
            .unwrap_or_else(|_| AdminClient::new(address, timeout))
    }

    /// What [`LocalCluster::admin_client`] proves itself with.
    pub fn admin_credentials(&self) -> Credentials {
        self.tls
            .as_ref()
            .map(|tls| tls.admin.clone())
            .unwrap_or_default()
    }

    /// The shell command that starts member `index` by hand.
    pub fn serve_command(&self, index: usize) -> String {
        let mut words = vec![self.binary.to_string_lossy().into_owned()];
        words.extend(self.serve_args(index));
        let log = self
            .logs_dir
            .join(format!("{}.log", self.members[index].id));
        format!("{} >>{} 2>&1", words.join(" "), log.display())
    }

    /// Members whose process has exited since the last call, each with how
    /// it died; their child handles are reaped.
    pub fn reap_exited(&mut self) -> Vec<(usize, String, Duration)> {
        let mut exited = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            let Some(child) = member.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                let ran = member.started.map_or(Duration::ZERO, |at| at.elapsed());
                member.child = None;
                exited.push((index, describe_exit(status), ran));
            }
        }
        exited
    }

    /// Kills member `index` with SIGKILL and reaps it.
    pub fn kill_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The members' binary protocol addresses.
    pub fn tcp_addresses(&self) -> Vec<String> {
        self.members.iter().map(|m| m.tcp_address.clone()).collect()
    }

    /// Each member's status, or why it did not answer.
    pub fn statuses(&self) -> Vec<Result<Status, String>> {
        self.members
            .iter()
            .map(|member| {
                self.admin_client(&member.http_address, Duration::from_millis(500))
                    .status()
                    .map_err(|err| err.to_string())
            })
            .collect()
    }

    /// Waits until a leader is known and it has committed in its term.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<Status, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .statuses()
                .into_iter()
                .flatten()
                .find(|status| status.role == Role::Leader && status.commit_index > 0);
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(format!("no leader within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every member: SIGTERM (a leader hands over first), then
    /// SIGKILL for any still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for member in &mut self.members {
            if let Some(child) = &member.child {
                terminate(child);
            }
        }
        let deadline = Instant::now() + grace;
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn join(members: &[LocalMember], address: impl Fn(&LocalMember) -> &String) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.id, address(m)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// One line per member, for a person.
/// How a process ended, in words: its exit code or the signal that killed it.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        None => format!("ended ({status})"),
    }
}

/// A member that dies sooner than this after its start is not restarted
/// again: it would only die again (bad flags, a damaged log, a held port).
const CRASH_LOOP_S: u64 = 5;

/// Notices exited members, says how each died, and restarts it unless it
/// died right after starting, in which case it prints the command instead.
fn restart_exited(cluster: &mut LocalCluster) {
    for (index, how, ran) in cluster.reap_exited() {
        let id = cluster.members[index].id.clone();
        let log = cluster.logs_dir.join(format!("{id}.log"));
        if ran < Duration::from_secs(CRASH_LOOP_S) {
            println!(
                "{id} {how} {:.1} s after its start; not restarting it (see {}). \
                 To start it by hand:\n  {}",
                ran.as_secs_f64(),
                log.display(),
                cluster.serve_command(index)
            );
            continue;
        }
        match cluster.start_member(index) {
            Ok(()) => println!("{id} {how}; restarted it (log: {})", log.display()),
            Err(err) => println!(
                "{id} {how}; restarting it failed ({err}). To start it by hand:\n  {}",
                cluster.serve_command(index)
            ),
        }
    }
}

fn render(cluster: &LocalCluster, statuses: &[Result<Status, String>]) -> String {
    let mut out = String::new();
    for (member, status) in cluster.members.iter().zip(statuses) {
        let line = match status {
            Ok(s) => format!("  {:<8} {}", member.id, s.summary()),
            Err(_) if member.child.is_none() => format!("  {:<8} not running", member.id),
            Err(_) => format!("  {:<8} not answering", member.id),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Runs `local-cluster` until Ctrl-C.
pub fn run(args: LocalClusterArgs) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(err) => {
            eprintln!("local-cluster: cannot find this program's path: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("local-cluster: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut cluster = match LocalCluster::start(&binary, &args) {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("local-cluster: starting the replicas: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "group {:?}: {} replicas, data and logs under {}",
        cluster.group,
        cluster.members.len(),
        args.data_dir.display()
    );
    for member in &cluster.members {
        println!(
            "  {}: binary protocol {}, HTTP {}://{}",
            member.id,
            member.tcp_address,
            if args.tls { "https" } else { "http" },
            member.http_address
        );
    }
    println!("Ctrl-C stops them all.");
    let writer = (args.writes_per_s > 0).then(|| {
        runtime.spawn(write_load(
            cluster.tcp_addresses(),
            cluster.group.clone(),
            cluster.client_tls(),
            args.writes_per_s,
        ))
    });
    runtime.block_on(async {
        let mut last = String::new();
        loop {
            restart_exited(&mut cluster);
            let statuses = tokio::task::block_in_place(|| cluster.statuses());
            let table = render(&cluster, &statuses);
            if table != last {
                println!("{}", timestamp());
                print!("{table}");
                last = table;
            }
            tokio::select! {
                () = super::serve::shutdown_signal() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    if let Some(writer) = writer {
        writer.abort();
    }
    println!("stopping...");
    cluster.stop(Duration::from_secs(5));
    println!("stopped; data kept under {}", args.data_dir.display());
    ExitCode::SUCCESS
}

/// The time of day in UTC, `HH:MM:SS.mmm`, without a date crate.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        now.subsec_millis()
    )
}

/// Appends small entries at `per_s` to the group until aborted.
async fn write_load(addresses: Vec<String>, group: String, tls: Option<TlsFiles>, per_s: u32) {
    let mut config = crate::net::client::ClientConfig::new(group);
    config.tls = match tls.map(Tls::load).transpose() {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("local-cluster: writer cannot read its TLS files: {err}");
            return;
        }
    };
    let client = match crate::net::client::Client::connect_with(addresses, config).await {
        Ok(client) => client,
        Err(err) => {
            eprintln!("local-cluster: writer cannot connect: {err}");
            return;
        }
    };
    let mut interval = tokio::time::interval(Duration::from_secs(1) / per_s.max(1));
    let mut sequence = 0u64;
    loop {
        interval.tick().await;
        sequence += 1;
        if let Err(err) = client
            .append(format!("local-cluster entry {sequence}"))
            .await
        {
            eprintln!("local-cluster: append failed: {err}");
        }
    }
}
