//! Finds the `dledger-replica` executable the suites run.
//!
//! `DLEDGER_BIN` wins when set. Otherwise the binary is
//! `target/<profile>/dledger-replica`, next to the `deps/` directory holding
//! the running test executable. `cargo test` builds a package's binaries only
//! for that package's own integration tests, so when the suites run under
//! cargo (`CARGO` is set) the binary is first brought up to date with
//! `cargo build --bin dledger-replica` in the same profile: a no-op when fresh,
//! and never a stale binary tested by mistake.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The replica executable's file name.
pub const BINARY_NAME: &str = "dledger-replica";

/// The path of the replica executable, built if needed (once per process).
///
/// # Errors
/// [`Error::Binary`] when `DLEDGER_BIN` names a missing file, when the target
/// directory cannot be found from the test executable, or when the build fails.
pub fn replica_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| locate().map_err(|error| error.to_string()))
        .clone()
        .map_err(Error::Binary)
}

fn locate() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("DLEDGER_BIN") {
        return explicit(PathBuf::from(path));
    }
    let profile_dir = profile_dir()?;
    let path = profile_dir.join(BINARY_NAME);
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(Path::new(&cargo), &profile_dir)?;
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Binary(format!(
            "{} not found: build it with `cargo build --release --bin {BINARY_NAME}` \
             or point DLEDGER_BIN at it",
            path.display()
        )))
    }
}

/// The binary named by `DLEDGER_BIN`, which must be a file.
fn explicit(path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Binary(format!(
            "DLEDGER_BIN={} is not a file",
            path.display()
        )))
    }
}

/// `target/<profile>`: the parent of the `deps/` directory of this executable.
fn profile_dir() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|error| Error::Binary(format!("current_exe: {error}")))?;
    let deps = exe
        .parent()
        .ok_or_else(|| Error::Binary(format!("{} has no parent", exe.display())))?;
    let dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent()
    } else {
        Some(deps)
    };
    dir.map(Path::to_path_buf)
        .ok_or_else(|| Error::Binary(format!("no target directory above {}", exe.display())))
}

fn build(cargo: &Path, profile_dir: &Path) -> Result<()> {
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", BINARY_NAME, "--bin", BINARY_NAME]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command
        .status()
        .map_err(|error| Error::Binary(format!("running {}: {error}", cargo.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Binary(format!(
            "`cargo build -p {BINARY_NAME}` ({profile}) failed: {status}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dledger_bin_must_name_a_file() {
        let missing = std::env::temp_dir().join("dledger-e2e-no-such-binary");
        let error = explicit(missing).expect_err("a missing file");
        assert!(error.to_string().contains("is not a file"), "{error}");
        let exe = std::env::current_exe().expect("current_exe");
        assert_eq!(explicit(exe.clone()).expect("a file"), exe);
    }

    #[test]
    fn the_profile_directory_holds_deps() {
        let dir = profile_dir().expect("profile dir");
        assert!(dir.join("deps").is_dir(), "{} has no deps/", dir.display());
    }
}
