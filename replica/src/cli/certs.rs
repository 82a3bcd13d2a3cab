//! `dledger-replica certs`: a group's CA and the certificates it signs,
//! for running members outside Kubernetes (the operator issues its own),
//! without OpenSSL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::certs::Ca;

/// Make a CA, or a certificate signed by it.
#[derive(Clone, Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a group's CA: `<dir>/ca.crt` (give it to every member and
    /// client as --tls-ca / --ca) and `<dir>/ca.key` (keep it private).
    Ca(CaArgs),
    /// Make a certificate signed by the CA in `<dir>`: `<dir>/<out>.crt`
    /// and `<dir>/<out>.key`. A member's names its member id and every host
    /// name or address it is reached at; a client's any name (one of the
    /// members' --admin-names for the admin right).
    Issue(IssueArgs),
}

/// `certs ca`.
#[derive(Clone, Debug, Args)]
pub struct CaArgs {
    /// The group (in the CA's name).
    #[arg(long)]
    pub group: String,
    /// Where to write `ca.crt` and `ca.key`; an existing CA is not
    /// overwritten.
    #[arg(long)]
    pub dir: PathBuf,
    /// Days the CA is valid.
    #[arg(long, default_value_t = 3650)]
    pub days: i64,
}

/// `certs issue`.
#[derive(Clone, Debug, Args)]
pub struct IssueArgs {
    /// The directory holding `ca.crt` and `ca.key`; the certificate is
    /// written there too.
    #[arg(long)]
    pub dir: PathBuf,
    /// A DNS name or IP address the certificate names (repeat; the first
    /// is its common name), e.g. `--name orders-0 --name 10.0.0.5`.
    #[arg(long = "name", required = true)]
    pub names: Vec<String>,
    /// The files' name without extension [default: the first name].
    #[arg(long)]
    pub out: Option<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// Runs `certs`.
pub fn run(command: CertsCommand) -> ExitCode {
    let result = match command {
        CertsCommand::Ca(args) => make_ca(&args),
        CertsCommand::Issue(args) => issue(&args),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("dledger-replica certs: {err}");
            ExitCode::FAILURE
        }
    }
}

fn make_ca(args: &CaArgs) -> Result<String, String> {
    if args.days <= 0 {
        return Err("--days must be positive".into());
    }
    let cert = args.dir.join("ca.crt");
    if cert.exists() {
        return Err(format!(
            "{} exists: a new CA would orphan every certificate it signed; remove it first",
            cert.display()
        ));
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|err| format!("creating {}: {err}", args.dir.display()))?;
    let (_, issued) = Ca::new(&args.group, args.days).map_err(|err| err.to_string())?;
    let (cert, key) = issued
        .write(&args.dir, "ca")
        .map_err(|err| format!("writing into {}: {err}", args.dir.display()))?;
    Ok(format!(
        "wrote {} and {} (valid until {})",
        cert.display(),
        key.display(),
        issued.not_after.date()
    ))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("reading {}: {err}", path.display()))
}

fn issue(args: &IssueArgs) -> Result<String, String> {
    if args.days <= 0 {
        return Err("--days must be positive".into());
    }
    let ca = Ca::from_pem(
        &read(&args.dir.join("ca.crt"))?,
        &read(&args.dir.join("ca.key"))?,
    )
    .map_err(|err| err.to_string())?;
    let out = args.out.clone().unwrap_or_else(|| args.names[0].clone());
    if out.contains('/') || out == "ca" {
        return Err(format!(
            "--out {out:?}: a file name other than ca, without /"
        ));
    }
    let issued = ca
        .issue(&args.names, args.days)
        .map_err(|err| err.to_string())?;
    let (cert, key) = issued
        .write(&args.dir, &out)
        .map_err(|err| format!("writing into {}: {err}", args.dir.display()))?;
    Ok(format!(
        "wrote {} and {} for {} (valid until {})",
        cert.display(),
        key.display(),
        args.names.join(", "),
        issued.not_after.date()
    ))
}
