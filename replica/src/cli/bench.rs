//! `dledger-replica bench`: acknowledged-append throughput and latency over
//! the binary protocol, against a running group or a local one it starts.
//!
//! With `--rate`, requests are scheduled open-loop at fixed times and each
//! latency is measured from its scheduled time, so a stall shows up in the
//! percentiles instead of silently slowing the load (no coordinated omission).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::time::Instant;

use super::client_cmds::Target;
use super::local_cluster::{LocalCluster, LocalClusterArgs};
use super::serve::FlushModeArg;
use crate::admin_client::{AdminClient, AdminError, Credentials};
use crate::api::Role;
use crate::net::client::Client;
use crate::net::client::ClientConfig;
use crate::net::tls::Tls;

/// Measure append throughput and latency.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The group to load (ignored with --local).
    #[command(flatten)]
    pub target: Target,

    /// Start a local group of this many replicas for the run, in a
    /// temporary directory, instead of using --servers.
    #[arg(long, default_value_t = 0)]
    pub local: u16,

    /// Flush mode of the --local group.
    #[arg(long, value_enum, default_value_t = FlushModeArg::Durable)]
    pub flush_mode: FlushModeArg,

    /// First binary protocol port of the --local group (HTTP ports start at
    /// this minus 2000).
    #[arg(long, default_value_t = 21911)]
    pub local_base_port: u16,

    /// Run the --local group with mutual TLS and HTTPS (a throwaway CA),
    /// the client with a certificate from it: what TLS costs.
    #[arg(long, requires = "local")]
    pub tls: bool,

    /// Bytes of each entry.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,

    /// Requests kept in flight (each one entry unless --batch).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,

    /// Entries per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,

    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,

    /// Requests per second offered, open-loop (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Measure failover instead: this many times, kill -9 the leader under
    /// light load (an append every 10 ms) and time the gap from the kill to
    /// the first acknowledged append, then restart it and let it catch up.
    #[arg(long, default_value_t = 0)]
    pub failover_kills: u32,

    /// Without --local: the command that kills and restarts members, called
    /// as `<hook> kill <i>` and `<hook> start <i>` (i: position in --http).
    #[arg(long)]
    pub hook: Option<String>,

    /// Without --local: the members' HTTP addresses, `host:port,...`, in
    /// member order (for --failover-kills; `--servers` here is the binary
    /// protocol addresses, as in the other client commands).
    #[arg(
        long = "http",
        env = "DLEDGER_HTTP",
        value_delimiter = ',',
        default_value = "127.0.0.1:18080,127.0.0.1:18081,127.0.0.1:18082"
    )]
    pub http: Vec<String>,

    /// The `system` name in JSON output.
    #[arg(long, default_value = "dledger")]
    pub system: String,

    /// The `durability` text in JSON output [default: from --flush-mode].
    #[arg(long)]
    pub durability: Option<String>,
}

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// Always `dledger`.
    pub system: String,
    /// This replica's version.
    pub version: String,
    /// `fsync` or `page-cache` (or the --durability text).
    pub durability: String,
    /// What drove the load.
    pub client: String,
    /// Bytes per entry.
    pub payload_bytes: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Entries per request.
    pub batch: usize,
    /// Offered requests per second (0: closed loop).
    pub rate: u64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Entries acknowledged in the measured window.
    pub ops: u64,
    /// Entries acknowledged per second.
    pub throughput_ops: f64,
    /// Payload megabytes (10^6) acknowledged per second.
    pub throughput_mb_s: f64,
    /// Request latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Failed requests in the measured window.
    pub errors: u64,
}

/// The latency at quantile `q` of sorted microsecond samples, in ms.
fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

struct Window {
    start: Instant,
    end: Instant,
}

async fn worker(
    client: Client,
    args: Arc<BenchArgs>,
    window: Arc<Window>,
    schedule: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> Vec<u32> {
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let mut latencies_us = Vec::new();
    loop {
        let scheduled = if args.rate > 0 {
            let k = schedule.fetch_add(1, Ordering::Relaxed);
            let at = window.start - Duration::from_secs(args.warmup_s)
                + Duration::from_secs_f64(k as f64 / args.rate as f64);
            tokio::time::sleep_until(at).await;
            at
        } else {
            Instant::now()
        };
        if scheduled >= window.end {
            return latencies_us;
        }
        let result = client
            .append_batch(vec![payload.clone(); args.batch.max(1)])
            .await;
        let measured = scheduled >= window.start;
        match result {
            Ok(_) if measured => {
                let us = scheduled.elapsed().as_micros();
                latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(_) => {}
            Err(err) => {
                if measured {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("append failed: {err}");
            }
        }
    }
}

async fn measure(
    addresses: Vec<String>,
    group: String,
    tls: Option<Tls>,
    args: Arc<BenchArgs>,
) -> Result<BenchResult, String> {
    let mut config = ClientConfig::new(group);
    config.tls = tls;
    let client = Client::connect_with(addresses, config)
        .await
        .map_err(|err| format!("connecting: {err}"))?;
    let start = Instant::now() + Duration::from_secs(args.warmup_s);
    let window = Arc::new(Window {
        start,
        end: start + Duration::from_secs(args.duration_s),
    });
    let schedule = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.in_flight.max(1))
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                args.clone(),
                window.clone(),
                schedule.clone(),
                errors.clone(),
            ))
        })
        .collect();
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.map_err(|err| format!("worker failed: {err}"))?);
    }
    latencies_us.sort_unstable();
    let duration_s = args.duration_s as f64;
    let ops = latencies_us.len() as u64 * args.batch.max(1) as u64;
    Ok(BenchResult {
        system: args.system.clone(),
        version: crate::version().into(),
        durability: args
            .durability
            .clone()
            .unwrap_or_else(|| match args.flush_mode {
                FlushModeArg::Durable => "fsync".into(),
                FlushModeArg::PageCache => "page-cache".into(),
            }),
        client: "dledger-replica bench (framed TCP, pipelined)".into(),
        payload_bytes: args.payload_bytes,
        in_flight: args.in_flight,
        batch: args.batch.max(1),
        rate: args.rate,
        duration_s,
        ops,
        throughput_ops: ops as f64 / duration_s,
        throughput_mb_s: (ops as f64 * args.payload_bytes as f64) / duration_s / 1e6,
        p50_ms: percentile_ms(&latencies_us, 0.50),
        p99_ms: percentile_ms(&latencies_us, 0.99),
        p999_ms: percentile_ms(&latencies_us, 0.999),
        max_ms: percentile_ms(&latencies_us, 1.0),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Runs `bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dledger-replica bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: BenchArgs) -> Result<(), String> {
    if args.duration_s == 0 {
        return Err("--duration-s must be positive".into());
    }
    // One thread drives every in-flight request: the client is I/O bound,
    // and a second worker only adds wake-ups (22k vs 18k appends/s measured).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the runtime: {err}"))?;
    let mut cluster = None;
    let (addresses, group) = if args.local > 0 {
        let local = start_local(&args)?;
        let addresses = local.tcp_addresses();
        let group = local.group.clone();
        cluster = Some(local);
        (addresses, group)
    } else {
        (args.target.servers.clone(), args.target.group.clone())
    };
    let tls = cluster
        .as_ref()
        .and_then(LocalCluster::client_tls)
        .map(Tls::load)
        .transpose()
        .map_err(|err| format!("the client's TLS files: {err}"))?;
    let admin = cluster
        .as_ref()
        .map(LocalCluster::admin_credentials)
        .unwrap_or_default();
    if args.failover_kills > 0 {
        let http = match &cluster {
            Some(local) => local
                .members
                .iter()
                .map(|m| m.http_address.clone())
                .collect(),
            None => args.http.clone(),
        };
        let mut killer = match cluster.as_mut() {
            Some(local) => Killer::Local(local),
            None => Killer::Hook(
                args.hook
                    .clone()
                    .ok_or("--failover-kills needs --local or --hook")?,
            ),
        };
        let access = Access { tls, admin };
        let result = failover(
            &runtime,
            &args,
            &mut killer,
            &http,
            addresses,
            group,
            &access,
        );
        if let Some(mut cluster) = cluster {
            cluster.stop(Duration::from_secs(5));
            remove_local_data(&cluster);
        }
        return result;
    }
    let args = Arc::new(args);
    let result = runtime.block_on(measure(addresses, group, tls, args.clone()));
    if let Some(mut cluster) = cluster {
        cluster.stop(Duration::from_secs(5));
        remove_local_data(&cluster);
    }
    let result = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&result).map_err(|err| err.to_string())?
        );
    } else {
        println!(
            "{} B entries, {} in flight x {} per request, {}: {:.0} entries/s ({:.1} MB/s); \
             latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} errors",
            result.payload_bytes,
            result.in_flight,
            result.batch,
            result.durability,
            result.throughput_ops,
            result.throughput_mb_s,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            result.max_ms,
            result.errors
        );
    }
    Ok(())
}

fn remove_local_data(cluster: &LocalCluster) {
    if let Some(parent) = cluster.members.first().and_then(|m| m.data_dir.parent()) {
        let _ = std::fs::remove_dir_all(parent);
    }
}

/// How members are killed and restarted for the failover measurement.
enum Killer<'a> {
    /// A group this command started.
    Local(&'a mut LocalCluster),
    /// An external command: `<hook> kill <i>`, `<hook> start <i>`.
    Hook(String),
}

impl Killer<'_> {
    fn act(&mut self, action: &str, index: usize) -> Result<(), String> {
        match self {
            Killer::Local(cluster) if action == "kill" => {
                cluster.kill_member(index);
                Ok(())
            }
            Killer::Local(cluster) => cluster
                .start_member(index)
                .map_err(|err| format!("restarting member {index}: {err}")),
            Killer::Hook(hook) => {
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("{hook} {action} {index}"))
                    .status()
                    .map_err(|err| format!("running the hook: {err}"))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`{hook} {action} {index}` failed: {status}"))
                }
            }
        }
    }
}

/// `/status` of `address`, within 300 ms.
fn status_of(address: &str, admin: &Credentials) -> Result<crate::api::Status, AdminError> {
    AdminClient::with_credentials(address, Duration::from_millis(300), admin)?.status()
}

/// How the failover measurement reaches the group.
struct Access {
    /// The client's TLS (with `--tls`).
    tls: Option<Tls>,
    /// The status calls' credentials.
    admin: Credentials,
}

/// The position in `http` of the member that reports itself leader with a
/// commit in its term, and its commit index; waits up to `timeout`.
fn find_leader(
    http: &[String],
    admin: &Credentials,
    timeout: Duration,
) -> Result<(usize, u64), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        for (index, address) in http.iter().enumerate() {
            if let Ok(status) = status_of(address, admin) {
                if status.role == Role::Leader && status.commit_index > 0 {
                    return Ok((index, status.commit_index));
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no leader within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until member `index` follows a leader with `at_least` entries.
fn wait_caught_up(
    address: &str,
    admin: &Credentials,
    at_least: u64,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(status) = status_of(address, admin) {
            if status.leader_id.is_some() && status.last_index >= at_least {
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{address} did not catch up within {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// From `killed_at`, an append every 10 ms until one is acknowledged; the
/// gap to that acknowledgement.
async fn first_ack_after(client: &Client, killed_at: Instant) -> Result<Duration, String> {
    let mut attempts = tokio::task::JoinSet::new();
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let deadline = killed_at + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if Instant::now() >= deadline {
                    return Err("no append acknowledged within 30 s of the kill".into());
                }
                let client = client.clone();
                attempts.spawn(async move { client.append(&b"failover probe"[..]).await });
            }
            Some(done) = attempts.join_next() => {
                if let Ok(Ok(_)) = done {
                    return Ok(killed_at.elapsed());
                }
            }
        }
    }
}

fn failover(
    runtime: &tokio::runtime::Runtime,
    args: &BenchArgs,
    killer: &mut Killer<'_>,
    http: &[String],
    addresses: Vec<String>,
    group: String,
    access: &Access,
) -> Result<(), String> {
    let mut config = ClientConfig::new(group);
    config.tls = access.tls.clone();
    config.backoff_initial_ms = 5;
    config.backoff_max_ms = 50;
    config.request_timeout_ms = 2_000;
    config.retry_deadline_ms = 30_000;
    let mut gaps_ms = Vec::new();
    for kill in 1..=args.failover_kills {
        let (leader, _) = find_leader(http, &access.admin, Duration::from_secs(30))?;
        let client = runtime
            .block_on(Client::connect_with(addresses.clone(), config.clone()))
            .map_err(|err| format!("connecting: {err}"))?;
        runtime
            .block_on(client.append(&b"warm-up"[..]))
            .map_err(|err| format!("append before the kill: {err}"))?;
        let killed_at = Instant::now();
        killer.act("kill", leader)?;
        let gap = runtime.block_on(first_ack_after(&client, killed_at))?;
        let gap_ms = gap.as_secs_f64() * 1000.0;
        gaps_ms.push(gap_ms);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "system": args.system,
                    "version": crate::version(),
                    "durability": args.durability.as_deref().unwrap_or("fsync"),
                    "kill": kill,
                    "member": leader,
                    "gap_ms": gap_ms,
                })
            );
        } else {
            println!(
                "kill {kill}: member {leader}, first acknowledged append after {gap_ms:.0} ms"
            );
        }
        killer.act("start", leader)?;
        let (_, commit) = find_leader(http, &access.admin, Duration::from_secs(30))?;
        wait_caught_up(
            &http[leader],
            &access.admin,
            commit,
            Duration::from_secs(30),
        )?;
    }
    gaps_ms.sort_by(f64::total_cmp);
    if !args.json {
        let at = |q: f64| {
            gaps_ms[((gaps_ms.len() as f64 * q).ceil() as usize).clamp(1, gaps_ms.len()) - 1]
        };
        println!(
            "failover over {} kills: p50 {:.0} ms, max {:.0} ms",
            gaps_ms.len(),
            at(0.5),
            at(1.0)
        );
    }
    Ok(())
}

fn start_local(args: &BenchArgs) -> Result<LocalCluster, String> {
    let binary =
        std::env::current_exe().map_err(|err| format!("cannot find this program: {err}"))?;
    let data_dir: PathBuf =
        std::env::temp_dir().join(format!("dledger-bench-{}", std::process::id()));
    let local_args = LocalClusterArgs {
        replicas: args.local,
        data_dir,
        group: "bench".into(),
        base_port: args.local_base_port,
        http_base_port: args.local_base_port.saturating_sub(2000),
        flush_mode: args.flush_mode,
        writes_per_s: 0,
        tls: args.tls,
    };
    let cluster = LocalCluster::start(&binary, &local_args)
        .map_err(|err| format!("starting the local group: {err}"))?;
    cluster.wait_for_leader(Duration::from_secs(10))?;
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::percentile_ms;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&samples, 0.5), 500.0);
        assert_eq!(percentile_ms(&samples, 0.99), 990.0);
        assert_eq!(percentile_ms(&samples, 0.999), 999.0);
        assert_eq!(percentile_ms(&samples, 1.0), 1000.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
