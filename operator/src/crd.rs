//! The `DLedgerGroup` resource (DESIGN.md, "The `DLedgerGroup` resource"):
//! the Rust types the CRD is generated from, with the schema bounds and CEL
//! rules that make the API server refuse bad input before the operator sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy;
use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the resource.
pub const GROUP: &str = "dledger.io";

/// Kubernetes quantity syntax, unsigned (a storage size cannot be negative).
const QUANTITY_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A replicated log group: an odd number of `dledger-replica` members in a
/// StatefulSet, watched and healed by the operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dledger.io",
    version = "v1alpha1",
    kind = "DLedgerGroup",
    namespaced,
    status = "DLedgerGroupStatus",
    shortname = "dlg",
    category = "dledger",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Term", type_ = "integer", json_path = ".status.term"),
    printcolumn(name = "Commit", type_ = "integer", json_path = ".status.commitIndex"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name must be at most 52 characters: the pods are named <name>-<ordinal> and the Service <name>-leader")
)]
#[serde(rename_all = "camelCase")]
pub struct DLedgerGroupSpec {
    /// Number of members: 1, 3, 5 or 7 (a majority must survive a failure).
    #[schemars(range(min = 1, max = 7), extend("enum" = [1, 3, 5, 7]))]
    pub replicas: i32,

    /// The `dledger-replica` image.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Each member's volume.
    pub storage: StorageSpec,

    /// Requests and limits of the replica container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The replica's tuning (every knob bounded).
    #[serde(default)]
    pub config: ReplicaConfig,

    /// A member that should lead whenever it is caught up (`<name>-<ordinal>`).
    // A pattern, not a CEL rule comparing with metadata.name: the API server
    // refuses such a rule as too costly (metadata.name has no bound it can see).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-[0-6]$")
    )]
    pub preferred_leader: Option<String>,

    /// Scheduling and metadata overrides for the member pods.
    #[serde(default)]
    pub pod: PodOverrides,

    /// How image and configuration changes roll out: one member at a time,
    /// followers first, the leader last after a leadership transfer.
    #[serde(default)]
    pub upgrade: UpgradeSpec,

    /// A requested switchover: the operator hands leadership to `target`
    /// whenever another member leads and no upgrade step is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverSpec>,

    /// Transport security: mutual TLS between members and for clients, with
    /// certificates the operator issues (on unless turned off).
    #[serde(default)]
    pub tls: TlsSpec,

    /// A NetworkPolicy in front of the members (off by default; it does
    /// nothing where the cluster's network does not enforce policies).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// What happens to the volumes when the group is deleted or scaled down
    /// (default: `Retain` for both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy:
        Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
}

/// Transport security of the members' ports (DESIGN.md, "Security").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.enabled == oldSelf.enabled").message("tls.enabled is immutable: members with and without TLS cannot talk to each other, so it is chosen when the group is created"),
    validation = Rule::new("self.renewBeforeDays < self.certificateDays").message("tls.renewBeforeDays must be less than tls.certificateDays"),
    validation = Rule::new("has(self.issuerRef) == has(oldSelf.issuerRef) && (!has(self.issuerRef) || self.issuerRef == oldSelf.issuerRef)").message("tls.issuerRef is immutable: another issuer is another CA, which the members cannot all take up at once")
)]
pub struct TlsSpec {
    /// Mutual TLS on the peer port and HTTPS on the HTTP port, with a CA
    /// per group in the Secret `<name>-ca`. `false` is PLAINTEXT: anyone
    /// who reaches the pods can write to and administer the group.
    #[serde(default = "default_tls_enabled")]
    pub enabled: bool,

    /// Validity of the member and client certificates the operator issues, days.
    #[serde(default = "default_certificate_days")]
    #[schemars(range(min = 2, max = 3650))]
    pub certificate_days: u32,

    /// A certificate is issued again this many days before it expires; the
    /// members reload theirs from the mounted Secret without a restart.
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1, max = 3649))]
    pub renew_before_days: u32,

    /// A cert-manager issuer to request the certificates from (one
    /// `Certificate` per member, one for applications, one for the
    /// operator) instead of the operator's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// Who may reach the members' ports when the NetworkPolicy is on: the
/// members each other (both ports), the operator (the HTTP port), and
/// `clientsFrom` (both ports). Credentials still decide what each may do
/// (only the operator's certificate has the admin right).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy `<name>` (removed again when turned off).
    #[serde(default)]
    pub enabled: bool,
    /// The applications (and scrapers) allowed in, as NetworkPolicy peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub clients_from: Vec<NetworkPolicyPeer>,
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the group's namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// Its API group.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

/// The kinds of cert-manager issuer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IssuerKind {
    /// In the group's namespace.
    #[default]
    Issuer,
    /// Cluster-wide.
    ClusterIssuer,
}

impl IssuerKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

fn default_tls_enabled() -> bool {
    true
}
fn default_certificate_days() -> u32 {
    90
}
fn default_renew_before_days() -> u32 {
    30
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            enabled: default_tls_enabled(),
            certificate_days: default_certificate_days(),
            renew_before_days: default_renew_before_days(),
            issuer_ref: None,
        }
    }
}

/// The kubelet's image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImagePullPolicy {
    /// Pull at every start.
    Always,
    /// Pull only when the node does not have it.
    #[default]
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The name the pod spec uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Each member's PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.size == oldSelf.size").message("storage.size is immutable: StatefulSet volume claim templates cannot change"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage.storageClassName is immutable")
)]
pub struct StorageSpec {
    /// Volume size, a Kubernetes quantity such as `1Gi`.
    #[schemars(length(min = 1, max = 64), regex(pattern = QUANTITY_PATTERN))]
    pub size: String,

    /// The StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// How an append is acknowledged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    /// After a majority has the entry on disk (fdatasync).
    #[default]
    Durable,
    /// WEAKER: after a majority has it in the page cache.
    PageCache,
}

impl FlushMode {
    /// The value of `DLEDGER_FLUSH_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushMode::Durable => "durable",
            FlushMode::PageCache => "page-cache",
        }
    }
}

/// The replica's knobs, written into the pods as `DLEDGER_*` variables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.electionTimeoutMs >= 2 * self.heartbeatMs").message("config.electionTimeoutMs must be at least twice config.heartbeatMs")
)]
pub struct ReplicaConfig {
    /// Leader heartbeat period, milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 10, max = 10000))]
    pub heartbeat_ms: u32,

    /// Minimum election timeout, milliseconds (failover takes about this long).
    #[serde(default = "default_election_timeout_ms")]
    #[schemars(range(min = 50, max = 60000))]
    pub election_timeout_ms: u32,

    /// When an append is acknowledged.
    #[serde(default)]
    pub flush_mode: FlushMode,

    /// Size of one log segment file, bytes (1 MiB to 1 GiB).
    #[serde(default = "default_segment_bytes")]
    #[schemars(range(min = 1_048_576, max = 1_073_741_824))]
    pub segment_bytes: u64,

    /// Largest entry accepted, bytes (1 KiB to 64 MiB).
    #[serde(default = "default_max_entry_bytes")]
    #[schemars(range(min = 1024, max = 67_108_864))]
    pub max_entry_bytes: u64,

    /// Delete sealed segments older than this, seconds (0: keep forever; at most 10 years).
    #[serde(default)]
    #[schemars(range(min = 0, max = 315_360_000))]
    pub retention_max_age_seconds: u64,

    /// Delete the oldest sealed segments while the log is bigger, bytes (0: no limit; at most 1 PiB).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1_125_899_906_842_624_u64))]
    pub retention_max_bytes: u64,

    /// `/readyz` fails while more committed entries than this are missing on a member.
    #[serde(default = "default_ready_max_lag")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub ready_max_lag: u64,

    /// How long a leader on SIGTERM waits for a hand-off, milliseconds.
    #[serde(default = "default_shutdown_transfer_timeout_ms")]
    #[schemars(range(min = 100, max = 60000))]
    pub shutdown_transfer_timeout_ms: u32,
}

fn default_heartbeat_ms() -> u32 {
    100
}
fn default_election_timeout_ms() -> u32 {
    500
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_max_entry_bytes() -> u64 {
    4 << 20
}
fn default_ready_max_lag() -> u64 {
    1000
}
fn default_shutdown_transfer_timeout_ms() -> u32 {
    3000
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_timeout_ms(),
            flush_mode: FlushMode::default(),
            segment_bytes: default_segment_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            retention_max_age_seconds: 0,
            retention_max_bytes: 0,
            ready_max_lag: default_ready_max_lag(),
            shutdown_transfer_timeout_ms: default_shutdown_transfer_timeout_ms(),
        }
    }
}

/// Overrides for the member pods; the operator's defaults apply where absent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Replaces the default (preferred anti-affinity per host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
    /// Node selector of the member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Topology spread constraints of the member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra labels (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Who decides when an outdated member restarts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum UpgradeStrategy {
    /// The operator rolls members one at a time, the leader last.
    #[default]
    Automatic,
    /// The operator waits for a person to approve each step.
    Supervised,
}

/// How changes of the pod template roll out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `automatic` or `supervised`.
    #[serde(default)]
    pub strategy: UpgradeStrategy,
    /// A member restarts only while every other member is within this many entries of the leader.
    #[serde(default = "default_upgrade_max_lag")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub max_lag: u64,
    /// How long one step (a member back, Ready and caught up) may take, seconds.
    #[serde(default = "default_step_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub step_timeout_seconds: u32,
    /// Pause between two steps, seconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub pause_seconds: u32,
}

fn default_upgrade_max_lag() -> u64 {
    1000
}
fn default_step_timeout_seconds() -> u32 {
    600
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        UpgradeSpec {
            strategy: UpgradeStrategy::default(),
            max_lag: default_upgrade_max_lag(),
            step_timeout_seconds: default_step_timeout_seconds(),
            pause_seconds: 0,
        }
    }
}

/// A requested change of leader.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverSpec {
    /// The member that should lead (`<name>-<ordinal>`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-[0-6]$")
    )]
    pub target: String,
}

/// What the operator observed, written after every status poll.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DLedgerGroupStatus {
    /// `Pending`, `Creating`, `Running`, `Degraded` or `NoQuorum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The leader the members agree on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The highest term a member reported.
    #[serde(default)]
    pub term: u64,
    /// The leader's commit index (the highest reported when there is no leader).
    #[serde(default)]
    pub commit_index: u64,
    /// Members whose pod is Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// One entry per pod, in ordinal order (more than `spec.replicas`
    /// while a shrink removes members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The configuration in force, as the leader reports it; absent while
    /// no leader is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ConfigurationStatus>,
    /// The StatefulSet's current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The StatefulSet's update revision (pods not on it are outdated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The rolling upgrade in progress (written by the upgrade planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// The switchover in progress or last done (written by the upgrade planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
    /// `Available`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The members of the group's configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The log index of the configuration entry (0: the bootstrap list).
    pub index: u64,
    /// Members that vote, sorted: the pod name, followed by `#` and the
    /// incarnation in hex for a member that joined with an empty volume.
    #[serde(default)]
    pub voters: Vec<String>,
    /// Members that receive the log and do not vote yet, named likewise.
    #[serde(default)]
    pub learners: Vec<String>,
}

/// One member as its `/status` (or its silence) showed it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The pod name, which is the member id.
    pub name: String,
    /// Whether `/status` answered at the last poll.
    pub answering: bool,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner`; absent when not answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Its term.
    #[serde(default)]
    pub term: u64,
    /// The last index on its disk.
    #[serde(default)]
    pub last_index: u64,
    /// Its commit index.
    #[serde(default)]
    pub commit_index: u64,
    /// Entries behind the leader's commit index.
    #[serde(default)]
    pub lag: u64,
    /// The replica's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the TLS certificate it serves expires (RFC 3339); it moves on
    /// once the member has taken up a renewed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
    /// Whether its pod is Ready.
    pub ready: bool,
    /// Whether its pod runs the StatefulSet's update revision.
    pub updated: bool,
}

/// The upgrade step in progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// What the step does: `restart-member`, `transfer-leadership` or `pause`.
    pub step: String,
    /// The member it concerns.
    pub member: String,
    /// The commit index seen when the member's pod was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index_at_deletion: Option<u64>,
    /// When the step started (RFC 3339).
    pub started_at: String,
    /// For a restart: the uid of the pod deleted, so that an operator that
    /// stopped between recording and deleting deletes that pod, and only it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// A switchover, recorded so that an operator restart resumes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    /// The member asked to lead.
    pub target: String,
    /// The leader when the switchover was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// When the target became leader (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// A condition with the usual Kubernetes meaning.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Available`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A PascalCase reason.
    pub reason: String,
    /// A sentence for a person.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, what `dledger-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd: CustomResourceDefinition = DLedgerGroup::crd();
    serde_yaml::to_string(&crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_value() -> serde_json::Value {
        serde_json::json!({"replicas": 3, "image": "localhost/dledger-replica:dev", "storage": {"size": "1Gi"}})
    }

    #[test]
    fn the_committed_crd_is_what_the_types_generate() {
        let generated = crd_yaml().unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/dledger.io_dledgergroups.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == generated,
            "crds/dledger.io_dledgergroups.yaml drifted from the Rust types: run `cargo run -p dledger-operator --bin dledger-operator -- crd > crds/dledger.io_dledgergroups.yaml`"
        );
    }

    #[test]
    fn a_minimal_spec_gets_the_defaults() {
        let spec: DLedgerGroupSpec = serde_json::from_value(spec_value()).unwrap();
        assert_eq!(spec.config, ReplicaConfig::default());
        assert_eq!(spec.config.election_timeout_ms, 500);
        assert_eq!(spec.image_pull_policy, ImagePullPolicy::IfNotPresent);
        assert_eq!(spec.upgrade.strategy, UpgradeStrategy::Automatic);
    }

    #[test]
    fn the_schema_bounds_replicas_and_names_the_crd() {
        let crd = DLedgerGroup::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("dledgergroups.dledger.io")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["dlg".to_string()]));
        let json = serde_json::to_value(&crd).unwrap();
        let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["replicas"]["enum"],
            serde_json::json!([1, 3, 5, 7])
        );
        assert_eq!(spec["properties"]["replicas"]["maximum"], 7.0);
        assert!(spec["required"]
            .as_array()
            .unwrap()
            .contains(&"image".into()));
        let config = &spec["properties"]["config"];
        for knob in [
            "heartbeatMs",
            "electionTimeoutMs",
            "segmentBytes",
            "maxEntryBytes",
            "readyMaxLag",
            "shutdownTransferTimeoutMs",
            "retentionMaxAgeSeconds",
            "retentionMaxBytes",
        ] {
            assert!(
                config["properties"][knob]["maximum"].is_number(),
                "{knob} has no upper bound"
            );
        }
        let columns: Vec<String> = json["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|column| column["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            columns,
            ["Replicas", "Ready", "Leader", "Term", "Commit", "Phase", "Age"]
        );
        assert!(json["spec"]["versions"][0]["subresources"]["status"].is_object());
    }

    #[test]
    fn cel_refuses_an_election_timeout_not_above_the_heartbeat() {
        let good = serde_json::to_value(ReplicaConfig::default()).unwrap();
        assert!(ReplicaConfig::validate_cel(&good, None).is_ok());
        let mut bad = good.clone();
        bad["electionTimeoutMs"] = 150.into();
        bad["heartbeatMs"] = 100.into();
        let err = ReplicaConfig::validate_cel(&bad, None).unwrap_err();
        assert!(format!("{err:?}").contains("electionTimeoutMs"), "{err:?}");
    }

    #[test]
    fn tls_is_on_by_default_and_cannot_be_switched() {
        let spec: DLedgerGroupSpec = serde_json::from_value(spec_value()).unwrap();
        assert!(spec.tls.enabled);
        let json = serde_json::to_value(DLedgerGroup::crd()).unwrap();
        let tls = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["tls"];
        // The API server fills the default in, so a group created without
        // `tls` is stored with it on.
        assert_eq!(tls["default"]["enabled"], serde_json::json!(true));
        let on = serde_json::to_value(TlsSpec::default()).unwrap();
        assert!(TlsSpec::validate_cel(&on, Some(&on)).is_ok());
        let mut off = on.clone();
        off["enabled"] = false.into();
        let err = TlsSpec::validate_cel(&off, Some(&on)).unwrap_err();
        assert!(
            format!("{err:?}").contains("tls.enabled is immutable"),
            "{err:?}"
        );
        let mut issued = on.clone();
        issued["issuerRef"] =
            serde_json::json!({"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"});
        let err = TlsSpec::validate_cel(&issued, Some(&on)).unwrap_err();
        assert!(
            format!("{err:?}").contains("tls.issuerRef is immutable"),
            "{err:?}"
        );
        assert!(TlsSpec::validate_cel(&issued, Some(&issued)).is_ok());
        let mut renew_late = on.clone();
        renew_late["renewBeforeDays"] = 90.into();
        let err = TlsSpec::validate_cel(&renew_late, None).unwrap_err();
        assert!(format!("{err:?}").contains("renewBeforeDays"), "{err:?}");
    }

    #[test]
    fn cel_keeps_the_storage_class_and_size() {
        let old = serde_json::json!({"size": "1Gi", "storageClassName": "fast"});
        assert!(StorageSpec::validate_cel(&old, Some(&old)).is_ok());
        let changed_class = serde_json::json!({"size": "1Gi", "storageClassName": "slow"});
        let err = StorageSpec::validate_cel(&changed_class, Some(&old)).unwrap_err();
        assert!(
            format!("{err:?}").contains("storageClassName is immutable"),
            "{err:?}"
        );
        let dropped_class = serde_json::json!({"size": "1Gi"});
        assert!(StorageSpec::validate_cel(&dropped_class, Some(&old)).is_err());
        let grown = serde_json::json!({"size": "2Gi", "storageClassName": "fast"});
        let err = StorageSpec::validate_cel(&grown, Some(&old)).unwrap_err();
        assert!(
            format!("{err:?}").contains("storage.size is immutable"),
            "{err:?}"
        );
    }
}
