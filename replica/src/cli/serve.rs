//! `dledger-replica serve`: run one replica. Every flag has a `DLEDGER_*`
//! variable (DESIGN.md, "Configuration"); the operator sets those.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use std::time::Duration;

use crate::datadir;
use crate::net::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::net::tls::TlsFiles;
use crate::server::retention::RetentionPolicy;
use crate::server::{self, members, Security, ServerConfig};
use crate::store::{FlushMode, DEFAULT_SEGMENT_BYTES, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};

/// Room kept in a peer frame for what surrounds one entry's payload (the
/// message, the entry's index and term, the encoding's lengths).
const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// The largest `--max-entry-bytes`: one entry must travel alone in one
/// peer frame, whose size the protocol bounds.
pub const MAX_ENTRY_BYTES_LIMIT: usize = DEFAULT_MAX_FRAME_BYTES as usize - FRAME_OVERHEAD_BYTES;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlushModeArg {
    /// After a majority has the entry on disk (fdatasync). The default.
    Durable,
    /// WEAKER: after a majority has the entry in the page cache, not on
    /// disk; a power loss on a majority can lose acknowledged entries.
    PageCache,
}

impl From<FlushModeArg> for FlushMode {
    fn from(mode: FlushModeArg) -> FlushMode {
        match mode {
            FlushModeArg::Durable => FlushMode::Durable,
            FlushModeArg::PageCache => FlushMode::PageCache,
        }
    }
}

/// What a member with no configuration of its own does at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitialStateArg {
    /// Bootstrap a new group whose voters are the --peers members.
    New,
    /// Wait, without voting or campaigning, until the group's leader adds
    /// this member (`dledger-replica members add`).
    Existing,
}

/// Run one replica of a group.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// The group name; peers and clients of another group are refused at
    /// the handshake.
    #[arg(long, env = "DLEDGER_GROUP")]
    pub group: String,

    /// The group's unique id (the operator passes the `DLedgerGroup`'s uid):
    /// kept in the data directory at first start, and checked with every
    /// member this one connects to, so that a group recreated under the same
    /// name, or a volume left from a deleted one, never mixes with this one.
    /// Empty: none (the data directory's is used, if it has one).
    #[arg(long, env = "DLEDGER_GROUP_ID", default_value = "")]
    pub group_id: String,

    /// This member's id: one of the ids in --peers (in Kubernetes, the pod name).
    #[arg(long, env = "DLEDGER_ID")]
    pub id: String,

    /// All members, this one included: `id=host:port,id=host:port,...` with
    /// each member's binary protocol address. Host names are resolved again
    /// at every connection attempt. With `--initial-state existing` this
    /// member need not be listed (give --listen then): the list only says
    /// where the running group can be reached.
    #[arg(long, env = "DLEDGER_PEERS")]
    pub peers: String,

    /// What this member does when its data directory holds no configuration
    /// yet: `new` bootstraps a new group whose voters are the --peers
    /// members; `existing` waits until the leader of the running group adds
    /// it as a learner. Once the data directory holds a configuration (the
    /// log's), that one is in force and --peers only tells where to reach
    /// the members it lists.
    #[arg(long, env = "DLEDGER_INITIAL_STATE", value_enum, default_value = "new")]
    pub initial_state: InitialStateArg,

    /// Where the log (`log/`) and the term and vote (`meta`) live.
    #[arg(long, env = "DLEDGER_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Binary protocol listen address [default: 0.0.0.0 and this member's
    /// port from --peers].
    #[arg(long, env = "DLEDGER_LISTEN")]
    pub listen: Option<String>,

    /// HTTP listen address (status, health, metrics, admin, client API).
    #[arg(long, env = "DLEDGER_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: String,

    /// Members' HTTP addresses for redirects, `id=host:port,...`; a member
    /// not listed is assumed at its --peers host on the --http-listen port.
    #[arg(long, env = "DLEDGER_HTTP_PEERS", default_value = "")]
    pub http_peers: String,

    /// Leader heartbeat period.
    #[arg(long, env = "DLEDGER_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// Minimum election timeout; each member draws its timeout at random
    /// between this and twice this. Failover after a partition takes about
    /// this long; when the leader's process dies, its peers see the
    /// connection close and campaign within a heartbeat.
    #[arg(long, env = "DLEDGER_ELECTION_TIMEOUT_MS", default_value_t = 500)]
    pub election_timeout_ms: u64,

    /// Resolution of the timers above.
    #[arg(long, env = "DLEDGER_TICK_MS", default_value_t = 10)]
    pub tick_ms: u64,

    /// When an append is acknowledged: `durable` (after fdatasync on a
    /// majority) or the weaker `page-cache`.
    #[arg(long, env = "DLEDGER_FLUSH_MODE", value_enum, default_value_t = FlushModeArg::Durable)]
    pub flush_mode: FlushModeArg,

    /// Size of one log segment file, in bytes.
    #[arg(long, env = "DLEDGER_SEGMENT_BYTES", default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,

    /// Largest entry accepted, in bytes. At most 16,711,680 (one entry must
    /// fit a 16 MiB peer frame) and at most --segment-bytes less 60.
    #[arg(long, env = "DLEDGER_MAX_ENTRY_BYTES", default_value_t = 4 << 20)]
    pub max_entry_bytes: usize,

    /// A member that should lead whenever it is caught up; the leader hands
    /// over to it.
    #[arg(long, env = "DLEDGER_PREFERRED_LEADER")]
    pub preferred_leader: Option<String>,

    /// `/readyz` fails while this member's disk is more than this many
    /// entries behind the leader's commit index (as the leader last told
    /// it), and until it has heard from a leader since start.
    #[arg(long, env = "DLEDGER_READY_MAX_LAG", default_value_t = 1000)]
    pub ready_max_lag: u64,

    /// Delete sealed log segments last written longer ago than this many
    /// seconds (0: keep forever). Never past the commit index.
    #[arg(long, env = "DLEDGER_RETENTION_MAX_AGE_S", default_value_t = 0)]
    pub retention_max_age_s: u64,

    /// Delete the oldest sealed segments while the log is bigger than this
    /// many bytes (0: no limit). Never past the commit index; entries a
    /// lagging follower still needs are kept until the log reaches twice
    /// this size.
    #[arg(long, env = "DLEDGER_RETENTION_MAX_BYTES", default_value_t = 0)]
    pub retention_max_bytes: u64,

    /// On SIGTERM a leader first hands leadership over, waiting at most this long.
    #[arg(
        long,
        env = "DLEDGER_SHUTDOWN_TRANSFER_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub shutdown_transfer_timeout_ms: u64,

    /// This member's certificate chain (PEM). With --tls-key and --tls-ca
    /// it turns on mutual TLS between members, TLS for clients on the
    /// binary port and HTTPS; then every caller needs a credential. The
    /// certificate must name this member's id (a DNS name) and the host
    /// names it is reached at. Without the three: PLAINTEXT, nothing
    /// authenticated: for the local quick start on loopback only.
    #[arg(long, env = "DLEDGER_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DLEDGER_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,

    /// The group's CA certificates (PEM): peers' and clients' certificates
    /// must chain to one of them.
    #[arg(long, env = "DLEDGER_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// How often the TLS files and the token file are read again (a
    /// rotated certificate is used for new connections, without a restart).
    #[arg(long, env = "DLEDGER_TLS_RELOAD_MS", default_value_t = crate::net::tls::DEFAULT_RELOAD_PERIOD_MS)]
    pub tls_reload_ms: u64,

    /// Bearer tokens clients may authenticate with (HTTP `Authorization:
    /// Bearer`; on the binary port an `Authenticate` request first), one
    /// per line: `<right> <token>` with right `read`, `write` or `admin`;
    /// `#` starts a comment. Turns on authentication even without TLS
    /// (then tokens travel in the clear).
    #[arg(long, env = "DLEDGER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Names (DNS names in a client certificate) that get the admin right;
    /// any other certificate from the CA gets the write right.
    #[arg(
        long,
        env = "DLEDGER_ADMIN_NAMES",
        value_delimiter = ',',
        default_value = "dledger-operator"
    )]
    pub admin_names: Vec<String>,

    /// Whether `/metrics` answers without a credential (scrapers).
    /// `/healthz` and `/readyz` always do (probes).
    #[arg(long, env = "DLEDGER_METRICS_OPEN", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_open: bool,
}

/// Why the arguments are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ServeArgsError {
    /// The member list.
    #[error(transparent)]
    Members(#[from] members::MembersError),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    /// The validated server configuration.
    pub fn config(&self) -> Result<ServerConfig, ServeArgsError> {
        if self.group.trim().is_empty() {
            return Err(ServeArgsError::Invalid(
                "--group is empty: name the group (peers and clients of another group are refused)"
                    .into(),
            ));
        }
        if self.heartbeat_ms == 0 {
            return Err(ServeArgsError::Invalid(
                "--heartbeat-ms is 0: the leader must send heartbeats at a positive period \
                 (default 100)"
                    .into(),
            ));
        }
        let http_port = self
            .http_listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                ServeArgsError::Invalid(format!(
                    "--http-listen {:?} is not host:port",
                    self.http_listen
                ))
            })?;
        // A member that joins a running group need not be in --peers: the
        // list only tells it where the group is. One that bootstraps must be.
        let members = match self.initial_state {
            InitialStateArg::New => {
                members::parse_members(&self.id, &self.peers, &self.http_peers, http_port)?
            }
            InitialStateArg::Existing => {
                members::parse_member_list(&self.peers, &self.http_peers, http_port)?
            }
        };
        if let Some(preferred) = &self.preferred_leader {
            if !members.iter().any(|member| &member.name == preferred) {
                return Err(ServeArgsError::Invalid(format!(
                    "--preferred-leader {preferred:?} is not a member"
                )));
            }
        }
        if self.tick_ms == 0 || self.heartbeat_ms < self.tick_ms {
            return Err(ServeArgsError::Invalid(format!(
                "--tick-ms must be positive and at most --heartbeat-ms ({} > {})",
                self.tick_ms, self.heartbeat_ms
            )));
        }
        if self.election_timeout_ms < 3 * self.heartbeat_ms {
            return Err(ServeArgsError::Invalid(format!(
                "--election-timeout-ms ({}) must be at least three heartbeats ({})",
                self.election_timeout_ms,
                3 * self.heartbeat_ms
            )));
        }
        self.check_limits()?;
        let own = members
            .iter()
            .find(|member| member.name == self.id)
            .map(|member| member.tcp_address.clone())
            .unwrap_or_default();
        let listen = match &self.listen {
            Some(listen) => listen.clone(),
            None if own.is_empty() => {
                return Err(ServeArgsError::Invalid(format!(
                    "--listen is needed: --peers does not list {:?}, so it gives no port",
                    self.id
                )))
            }
            None => {
                let port = own.rsplit_once(':').map_or("20911", |(_, port)| port);
                format!("0.0.0.0:{port}")
            }
        };
        Ok(ServerConfig {
            group: self.group.clone(),
            group_id: self.group_id.clone(),
            id: self.id.clone(),
            members,
            initial_state: match self.initial_state {
                InitialStateArg::New => server::InitialState::New,
                InitialStateArg::Existing => server::InitialState::Existing,
            },
            data_dir: self.data_dir.clone(),
            listen,
            http_listen: self.http_listen.clone(),
            tick_ms: self.tick_ms,
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_ms: self.election_timeout_ms,
            flush_mode: self.flush_mode.into(),
            segment_bytes: self.segment_bytes,
            max_entry_bytes: self.max_entry_bytes,
            preferred_leader: self.preferred_leader.clone(),
            ready_max_lag: self.ready_max_lag,
            shutdown_transfer_timeout_ms: self.shutdown_transfer_timeout_ms,
            retention: RetentionPolicy {
                max_age: (self.retention_max_age_s > 0)
                    .then(|| Duration::from_secs(self.retention_max_age_s)),
                max_bytes: (self.retention_max_bytes > 0).then_some(self.retention_max_bytes),
            },
            security: self.security()?,
        })
    }
}

impl ServeArgs {
    fn security(&self) -> Result<Security, ServeArgsError> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(ServeArgsError::Invalid(
                    "--tls-cert, --tls-key and --tls-ca go together: give all three or none".into(),
                ))
            }
        };
        if self.tls_reload_ms == 0 {
            return Err(ServeArgsError::Invalid(
                "--tls-reload-ms must be positive".into(),
            ));
        }
        Ok(Security {
            tls,
            tls_reload_ms: self.tls_reload_ms,
            token_file: self.token_file.clone(),
            admin_names: self
                .admin_names
                .iter()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect(),
            metrics_open: self.metrics_open,
        })
    }

    /// Refuses sizes that contradict each other: an entry accepted from a
    /// client must fit one log segment and one peer frame, or every member
    /// would fail on it (a segment) or the group would stall on it (a frame).
    fn check_limits(&self) -> Result<(), ServeArgsError> {
        let segment_headers = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64;
        if self.max_entry_bytes == 0 {
            return Err(ServeArgsError::Invalid(
                "--max-entry-bytes must be positive".into(),
            ));
        }
        if self.segment_bytes <= segment_headers {
            return Err(ServeArgsError::Invalid(format!(
                "--segment-bytes ({}) must exceed the {segment_headers} bytes of a segment's and an entry's headers",
                self.segment_bytes
            )));
        }
        let segment_room = self.segment_bytes - segment_headers;
        if self.max_entry_bytes as u64 > segment_room {
            return Err(ServeArgsError::Invalid(format!(
                "--max-entry-bytes ({}) does not fit one log segment: --segment-bytes ({}) holds entries of at most {segment_room} bytes; lower --max-entry-bytes or raise --segment-bytes",
                self.max_entry_bytes, self.segment_bytes
            )));
        }
        if self.max_entry_bytes > MAX_ENTRY_BYTES_LIMIT {
            return Err(ServeArgsError::Invalid(format!(
                "--max-entry-bytes ({}) exceeds what one peer frame carries ({MAX_ENTRY_BYTES_LIMIT} bytes: the {DEFAULT_MAX_FRAME_BYTES}-byte frame limit less {FRAME_OVERHEAD_BYTES} bytes of framing); lower --max-entry-bytes",
                self.max_entry_bytes
            )));
        }
        Ok(())
    }
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("dledger-replica serve: {err}");
            return ExitCode::from(2);
        }
    };
    // Held until this function returns, that is for the whole run.
    let _lock = match datadir::claim(&config.data_dir) {
        Ok(lock) => lock,
        Err(err) => {
            eprintln!("dledger-replica serve: {err}");
            return ExitCode::from(2);
        }
    };
    log_config(&config);
    // One network thread: the consensus and the disk have threads of their
    // own, and on few cores every extra worker costs cross-thread wake-ups
    // (measured: current-thread served more appends per second than
    // multi-thread with `bench --local 3`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dledger-replica serve: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::serve(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dledger-replica serve: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs the effective configuration (flags, variables and defaults
/// resolved) once at start, so a log file tells how to run this member again.
fn log_config(config: &ServerConfig) {
    // Destructured without `..`: a new setting does not compile until it is
    // logged here too.
    let ServerConfig {
        group,
        group_id,
        id,
        members,
        initial_state,
        data_dir,
        listen,
        http_listen,
        tick_ms,
        heartbeat_ms,
        election_timeout_ms,
        flush_mode,
        segment_bytes,
        max_entry_bytes,
        preferred_leader,
        ready_max_lag,
        shutdown_transfer_timeout_ms,
        retention,
        security,
    } = config;
    let peers: Vec<String> = members
        .iter()
        .map(|member| format!("{}={}", member.name, member.tcp_address))
        .collect();
    let http_peers: Vec<String> = members
        .iter()
        .map(|member| format!("{}={}", member.name, member.http_address))
        .collect();
    tracing::info!(
        group = %group,
        group_id = if group_id.is_empty() { "-" } else { group_id.as_str() },
        id = %id,
        peers = %peers.join(","),
        http_peers = %http_peers.join(","),
        initial_state = ?initial_state,
        data_dir = %data_dir.display(),
        listen = %listen,
        http_listen = %http_listen,
        heartbeat_ms,
        election_timeout_ms,
        tick_ms,
        flush_mode = ?flush_mode,
        segment_bytes,
        max_entry_bytes,
        preferred_leader = preferred_leader.as_deref().unwrap_or("-"),
        ready_max_lag,
        retention_max_age_s = retention.max_age.map_or(0, |age| age.as_secs()),
        retention_max_bytes = retention.max_bytes.unwrap_or(0),
        shutdown_transfer_timeout_ms,
        tls_cert = security.tls.as_ref().map_or("-".into(), |tls| tls.cert.display().to_string()),
        tls_key = security.tls.as_ref().map_or("-".into(), |tls| tls.key.display().to_string()),
        tls_ca = security.tls.as_ref().map_or("-".into(), |tls| tls.ca.display().to_string()),
        tls_reload_ms = security.tls_reload_ms,
        token_file = security.token_file.as_ref().map_or("-".into(), |file| file.display().to_string()),
        admin_names = %security.admin_names.join(","),
        metrics_open = security.metrics_open,
        version = crate::version(),
        pid = std::process::id(),
        "effective configuration"
    );
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C still works through tokio.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
