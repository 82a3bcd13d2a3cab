//! `kubectl dledger`: status, switchover, restart and upgrade control of
//! DLedgerGroups (the logic is in `dledger_operator::plugin`).

use std::process::ExitCode;

use clap::Parser;
use dledger_operator::plugin::cli::Cli;
use dledger_operator::plugin::commands::{self, Session};
use dledger_operator::plugin::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match cli.context {
        Some(_) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|err| Error::Config(err.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|err| Error::Config(err.to_string()))?,
    };
    let client = kube::Client::try_from(config).map_err(|err| Error::Config(err.to_string()))?;
    let session = Session::new(client);
    let mut out = std::io::stdout().lock();
    commands::run(&session, cli.command, chrono::Utc::now(), &mut out).await
}
