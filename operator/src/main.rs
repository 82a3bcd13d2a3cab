//! `dledger-operator`: `run` the controller, print the `crd`, print the `rbac`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use dledger_operator::controller::{self, Settings};
use dledger_operator::lease::{self, LeaseSettings};
use dledger_operator::metrics::Metrics;
use dledger_operator::server::{self, ServerState};
use dledger_operator::{crd, rbac};
use kube::runtime::events::Reporter;

/// The DLedgerGroup operator.
#[derive(Parser)]
#[command(name = "dledger-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with Lease-based leader election).
    Run(RunArgs),
    /// Print the DLedgerGroup CRD as YAML.
    Crd,
    /// Print the ServiceAccount, ClusterRole, Role and bindings the operator needs.
    Rbac {
        /// The namespace the operator runs in.
        #[arg(long, default_value = "dledger-system")]
        namespace: String,
        /// Print only the ClusterRole's rules (a YAML list, for the Helm chart).
        #[arg(long, conflicts_with = "lease_rules_only")]
        rules_only: bool,
        /// Print only the leader-election Role's rules (a YAML list).
        #[arg(long)]
        lease_rules_only: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "DLEDGER_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// The namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "dledger-system")]
    lease_namespace: String,
    /// The Lease's name.
    #[arg(
        long,
        env = "DLEDGER_OPERATOR_LEASE",
        default_value = "dledger-operator"
    )]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a stopped holder keeps the Lease, seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(3..=300))]
    lease_duration_s: i32,
    /// How long a member gets to answer /status, milliseconds.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(50..=10_000))]
    poll_timeout_ms: u64,
    /// Poll period of a settled group, milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_every_ms: u64,
    /// Poll period while a group has no leader or a silent member, milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    poll_unsettled_every_ms: u64,
    /// Longest poll period while an upgrade or switchover step is under way, milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_in_progress_every_ms: u64,
    /// How long a leadership transfer call to a leader may take, milliseconds
    /// (the replica answers once a new leader is elected, within 5 s).
    #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u64).range(1000..=60_000))]
    transfer_timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print(crd::crd_yaml()),
        Command::Rbac {
            rules_only: true, ..
        } => print(rbac::cluster_rules_yaml()),
        Command::Rbac {
            lease_rules_only: true,
            ..
        } => print(rbac::namespace_rules_yaml()),
        Command::Rbac { namespace, .. } => print(rbac::manifests_yaml(&namespace)),
        Command::Run(args) => run(args),
    }
}

fn print(yaml: Result<String, serde_yaml::Error>) -> ExitCode {
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> Result<(), String> {
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let app = server::router(ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "http server stopped");
        }
    });

    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {e}"))?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("dledger-operator-{}", std::process::id()));
    let lease_settings = LeaseSettings {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        lease_duration_s: args.lease_duration_s,
        renew_every_ms: (args.lease_duration_s as u64 * 1000 / 5).max(500),
    };
    ready.store(true, Ordering::SeqCst);
    tracing::info!(identity = %identity, lease = %args.lease_name, "waiting for the lease");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let terminated = tokio::spawn(async move {
        terminated().await;
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    tokio::select! {
        () = lease::acquire(&client, &lease_settings) => {}
        _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
    }

    let settings = Settings {
        operator_namespace: Some(args.lease_namespace.clone()),
        poll_timeout_ms: args.poll_timeout_ms,
        requeue_settled_ms: args.poll_every_ms,
        requeue_unsettled_ms: args.poll_unsettled_every_ms,
        requeue_in_progress_ms: args.poll_in_progress_every_ms,
        transfer_timeout_ms: args.transfer_timeout_ms,
        ..Settings::default()
    };
    let reporter = Reporter {
        controller: "dledger-operator".into(),
        instance: Some(identity),
    };
    let mut controller_stop = stop_rx.clone();
    let shutdown = async move {
        let _ = controller_stop.wait_for(|stopped| *stopped).await;
    };
    let controller = controller::run(client.clone(), metrics, settings, reporter, shutdown);
    let outcome = tokio::select! {
        () = controller => Ok(()),
        lost = lease::hold(&client, &lease_settings) => Err(lost.to_string()),
    };
    ready.store(false, Ordering::SeqCst);
    terminated.abort();
    if outcome.is_ok() {
        lease::release(&client, &lease_settings).await;
        tracing::info!("stopped on SIGTERM; lease released");
    }
    outcome
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
