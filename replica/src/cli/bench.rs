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
use crate::net::client::Client;

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
}

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// Always `dledger`.
    pub system: String,
    /// This replica's version.
    pub version: String,
    /// `fsync` or `page-cache`.
    pub durability: String,
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
    args: Arc<BenchArgs>,
) -> Result<BenchResult, String> {
    let client = Client::connect(addresses, group)
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
        system: "dledger".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        durability: match args.flush_mode {
            FlushModeArg::Durable => "fsync".into(),
            FlushModeArg::PageCache => "page-cache".into(),
        },
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
    let args = Arc::new(args);
    let result = runtime.block_on(measure(addresses, group, args.clone()));
    if let Some(mut cluster) = cluster {
        cluster.stop(Duration::from_secs(5));
        if let Some(parent) = cluster.members.first().and_then(|m| m.data_dir.parent()) {
            let _ = std::fs::remove_dir_all(parent);
        }
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
