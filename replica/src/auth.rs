//! Who may do what: the rights a caller's credential gives, on both front
//! ends (the binary port and HTTP).
//!
//! A credential is a client certificate the TLS handshake verified
//! against the group's CA, or a bearer token from the token file. Rights
//! are ordered: `Read` (status, entries, offsets read), `Write` (appends,
//! offset commits) and `Admin` (members, leadership transfer); each
//! includes the ones before it. A certificate that names one of the admin
//! names (the operator's) is `Admin`, any other from the CA is `Write`; a
//! token has the right written beside it in the file.
//!
//! With neither TLS nor a token file (the local quick start) everything is
//! open: [`Auth::open`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateDer;

use crate::net::tls::certificate_names;

/// What a caller may do; each right includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    /// Status, entries, consumer offsets: reading.
    Read,
    /// Appends and offset commits.
    Write,
    /// Membership changes and leadership transfer.
    Admin,
}

impl Right {
    /// Its name in the token file and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Right> {
        match name {
            "read" => Some(Right::Read),
            "write" => Some(Right::Write),
            "admin" => Some(Right::Admin),
            _ => None,
        }
    }
}

/// Why a token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("reading the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A line is not `<right> <token>`.
    #[error("{path} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong (never the token itself).
        reason: String,
    },
}

/// Shortest token accepted: a guessable token is no credential.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The tokens of a token file: one per line, `<right> <token>`, `#`
/// comments and blank lines ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens(Vec<(Right, Vec<u8>)>);

impl Tokens {
    /// Parses a token file's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokenFileError> {
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TokenFileError::Line {
                path: path.to_path_buf(),
                line: number + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let (Some(right), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad("expected `<right> <token>`".into()));
            };
            let right = Right::parse(right)
                .ok_or_else(|| bad(format!("unknown right {right:?} (read, write or admin)")))?;
            if token.len() < MIN_TOKEN_BYTES {
                return Err(bad(format!(
                    "a token must have at least {MIN_TOKEN_BYTES} characters"
                )));
            }
            tokens.push((right, token.as_bytes().to_vec()));
        }
        Ok(Tokens(tokens))
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Tokens, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(path, &text)
    }

    /// The right `token` gives, if it is in the file. Every token is
    /// compared in full, so the time taken tells nothing about them.
    pub fn right_of(&self, token: &[u8]) -> Option<Right> {
        let mut found = None;
        for (right, known) in &self.0 {
            if constant_time_eq(known, token) {
                found = found.max(Some(*right));
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a member decides rights. Cheap to clone; the token file is
/// shared and replaced in place when it is read again.
#[derive(Clone, Debug)]
pub struct Auth {
    /// Everything open (no TLS and no token file).
    open: bool,
    /// Certificate names that get `Admin`.
    admin_names: Arc<Vec<String>>,
    tokens: Arc<RwLock<Tokens>>,
    token_file: Option<Arc<PathBuf>>,
    /// `/metrics` is readable without a credential.
    pub metrics_open: bool,
}

/// The outcome of a check, for the front ends to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential (or an unknown token): HTTP 401.
    Unauthenticated(String),
    /// A credential without the right: HTTP 403.
    Forbidden(String),
}

impl Auth {
    /// Everything allowed to everyone: the local quick start.
    pub fn open() -> Auth {
        Auth {
            open: true,
            admin_names: Arc::new(Vec::new()),
            tokens: Arc::default(),
            token_file: None,
            metrics_open: true,
        }
    }

    /// Credentials required; `token_file` (read now) may add tokens.
    pub fn required(
        admin_names: Vec<String>,
        token_file: Option<PathBuf>,
        metrics_open: bool,
    ) -> Result<Auth, TokenFileError> {
        let tokens = match &token_file {
            Some(path) => Tokens::read(path)?,
            None => Tokens::default(),
        };
        Ok(Auth {
            open: false,
            admin_names: Arc::new(admin_names),
            tokens: Arc::new(RwLock::new(tokens)),
            token_file: token_file.map(Arc::new),
            metrics_open,
        })
    }

    /// Whether every caller may do everything.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether callers may prove themselves with tokens (a token file is
    /// configured).
    pub fn has_token_file(&self) -> bool {
        self.token_file.is_some()
    }

    /// Reads the token file again (no effect without one); on an error
    /// the tokens read before stay.
    pub fn reload_tokens(&self) -> Result<bool, TokenFileError> {
        let Some(path) = &self.token_file else {
            return Ok(false);
        };
        let tokens = Tokens::read(path)?;
        let mut current = self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current == tokens {
            return Ok(false);
        }
        *current = tokens;
        Ok(true)
    }

    /// The right a verified client certificate gives.
    pub fn right_of_certificate(&self, certificate: &CertificateDer<'_>) -> Right {
        if self
            .admin_names
            .iter()
            .any(|name| certificate_names(certificate, name))
        {
            Right::Admin
        } else {
            Right::Write
        }
    }

    /// The right of a bearer token, if it is known.
    pub fn right_of_token(&self, token: &[u8]) -> Option<Right> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .right_of(token)
    }

    /// Whether a caller holding `certificate` (verified) and/or `token`
    /// may do what needs `needed`.
    pub fn check(
        &self,
        certificate: Option<&CertificateDer<'_>>,
        token: Option<&[u8]>,
        needed: Right,
    ) -> Result<(), Refusal> {
        if self.open {
            return Ok(());
        }
        let from_certificate = certificate.map(|cert| self.right_of_certificate(cert));
        let from_token = match token {
            Some(token) => match self.right_of_token(token) {
                Some(right) => Some(right),
                None => {
                    return Err(Refusal::Unauthenticated(
                        "the bearer token is not known".into(),
                    ))
                }
            },
            None => None,
        };
        match from_certificate.max(from_token) {
            None => Err(Refusal::Unauthenticated(format!(
                "a credential is needed ({} right): a client certificate from the group's CA or a bearer token",
                needed.name()
            ))),
            Some(held) if held < needed => Err(Refusal::Forbidden(format!(
                "this credential has the {} right; this needs {}",
                held.name(),
                needed.name()
            ))),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_are_parsed_and_errors_name_the_line_not_the_token() {
        let path = Path::new("tokens");
        let tokens = Tokens::parse(
            path,
            "# comment\n\nwrite aaaaaaaaaaaaaaaa\nadmin bbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(tokens.right_of(b"aaaaaaaaaaaaaaaa"), Some(Right::Write));
        assert_eq!(tokens.right_of(b"bbbbbbbbbbbbbbbbbbbb"), Some(Right::Admin));
        assert_eq!(tokens.right_of(b"aaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.right_of(b""), None);

        let error = Tokens::parse(path, "write short\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && !error.contains("short"),
            "{error}"
        );
        let error = Tokens::parse(path, "root cccccccccccccccccc\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown right"), "{error}");
        assert!(Tokens::parse(path, "write a b\n").is_err());
    }

    #[test]
    fn rights_are_ordered_and_refusals_tell_401_from_403() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "read rrrrrrrrrrrrrrrr\nwrite wwwwwwwwwwwwwwww\n").unwrap();
        let auth =
            Auth::required(vec!["dledger-operator".into()], Some(file.clone()), true).unwrap();
        assert!(matches!(
            auth.check(None, None, Right::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.check(None, Some(b"unknownunknownunknown"), Right::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert_eq!(
            auth.check(None, Some(b"rrrrrrrrrrrrrrrr"), Right::Read),
            Ok(())
        );
        assert!(matches!(
            auth.check(None, Some(b"rrrrrrrrrrrrrrrr"), Right::Write),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            auth.check(None, Some(b"wwwwwwwwwwwwwwww"), Right::Write),
            Ok(())
        );
        assert!(matches!(
            auth.check(None, Some(b"wwwwwwwwwwwwwwww"), Right::Admin),
            Err(Refusal::Forbidden(_))
        ));
        // The file changes: the new tokens count, the old ones no more.
        std::fs::write(&file, "admin aaaaaaaaaaaaaaaa\n").unwrap();
        assert!(auth.reload_tokens().unwrap());
        assert_eq!(
            auth.check(None, Some(b"aaaaaaaaaaaaaaaa"), Right::Admin),
            Ok(())
        );
        assert!(auth
            .check(None, Some(b"wwwwwwwwwwwwwwww"), Right::Read)
            .is_err());
        // A broken file keeps the tokens read before.
        std::fs::write(&file, "admin x\n").unwrap();
        assert!(auth.reload_tokens().is_err());
        assert_eq!(
            auth.check(None, Some(b"aaaaaaaaaaaaaaaa"), Right::Admin),
            Ok(())
        );

        assert_eq!(Auth::open().check(None, None, Right::Admin), Ok(()));
    }

    #[test]
    fn certificates_from_the_ca_write_and_admin_names_administer() {
        let (ca, _) = crate::certs::Ca::new("orders", 30).unwrap();
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let app = der(&ca.issue(&["billing".into()], 30).unwrap().cert_pem);
        let operator = der(&ca.issue(&["dledger-operator".into()], 30).unwrap().cert_pem);
        let auth = Auth::required(vec!["dledger-operator".into()], None, false).unwrap();
        assert_eq!(auth.check(Some(&app), None, Right::Write), Ok(()));
        assert!(matches!(
            auth.check(Some(&app), None, Right::Admin),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(auth.check(Some(&operator), None, Right::Admin), Ok(()));
    }

    use rustls::pki_types::pem::PemObject;
}
