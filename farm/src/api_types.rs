//! What the API's requests and answers carry: shared by the server, its command-line client
//! and the build hosts, and described in the OpenAPI document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::role::Role;

/// The header that carries an artifact upload's offset (as in the tus protocol).
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// The header that carries an artifact upload's whole length.
pub const UPLOAD_LENGTH: &str = "upload-length";

/// An error, as every endpoint answers one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    /// One line: what went wrong and what to do.
    pub error: String,
}

/// A build to run on the farm.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitRequest {
    /// A system of the server's site config.
    pub system: String,
    /// Only a host with this storage backend (`zfs`, `btrfs`, `dir`, or a plugin's) builds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// A job: one build of a system, on whichever host can run it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub system: String,
    pub arch: String,
    /// The storage backend a host must have to build it; any when `None`.
    #[serde(default)]
    pub backend: Option<String>,
    /// The SHA-256 of the site config snapshot the job builds with.
    pub config_hash: String,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// The host that runs (or ran) it.
    pub host: Option<String>,
    /// How many times it was handed to a host before this one (0 for the first).
    pub attempt: i64,
    /// Its record: `builds show SYSTEM N`.
    pub build_number: Option<i64>,
    pub submitted_by: String,
    /// Milliseconds since the epoch.
    pub submitted_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
    /// The stages, kernel sources and repository snapshot the farm hands its host, by content.
    #[serde(default)]
    pub inputs: Vec<Input>,
}

/// What a build starts from that the farm server keeps by content: a host that lacks it, or
/// has another content under its name, fetches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// A stage tarball, imported with `stage import`.
    Stage,
    /// A kernel source tarball, imported with `kernel import`.
    Kernel,
    /// A SquashFS snapshot of the ebuild repository, as `repo pack` writes it.
    Repo,
}

impl InputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stage => "stage",
            Self::Kernel => "kernel",
            Self::Repo => "repo",
        }
    }
}

impl std::fmt::Display for InputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InputKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stage" => Ok(Self::Stage),
            "kernel" => Ok(Self::Kernel),
            "repo" => Ok(Self::Repo),
            _ => Err(format!(
                "`{text}` is not an input kind: stage, kernel or repo"
            )),
        }
    }
}

/// One input of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Input {
    pub kind: InputKind,
    /// Its name in the site config (and on the host): a stage's, a kernel volume's, a
    /// repository image's (without `.sqfs`).
    pub name: String,
    /// The SHA-256 of its content: the tarball or the SquashFS image.
    pub sha256: String,
    pub size: u64,
}

/// An input as the server keeps it: `farm input list`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InputRecord {
    #[serde(flatten)]
    pub input: Input,
    pub added_by: String,
    /// Milliseconds since the epoch.
    pub added_at: i64,
}

/// `PUT /inputs/{kind}/{name}`: the content (uploaded before) a name now stands for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddInput {
    pub sha256: String,
}

/// What `POST /jobs` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub job: Job,
    /// The same build (system, site config, snapshot) was submitted before: this is that job,
    /// and nothing new was queued.
    pub existing: bool,
}

/// An architecture a build host can build for.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct HostArch {
    /// Gentoo's name: amd64, arm64, …
    pub arch: String,
    /// Natively, rather than through qemu-user.
    pub native: bool,
}

/// What a build host can build.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Capabilities {
    pub arches: Vec<HostArch>,
    /// The storage backends it has.
    pub backends: Vec<String>,
    /// How many more jobs it can take now.
    pub free_slots: u32,
}

/// A build host's request to join the farm.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// A one-time enrollment key (`farm key create`).
    pub key: String,
    /// The host's name on the farm: letters, digits, `-`, `_` and `.`.
    pub name: String,
}

/// A build host's credential, given once at enrollment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    pub host: String,
    /// The host's secret: its bearer token from now on, until it is revoked.
    pub secret: String,
}

/// How often a host must say it is alive, and after how long without it its jobs go to
/// others.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    pub heartbeat_ms: u64,
    pub dead_after_ms: u64,
}

/// A job handed to a host.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub job: Job,
    /// The job's credential: its events, artifacts and result, for this attempt only.
    pub secret: String,
    pub liveness: Liveness,
}

/// What a host asks for when it asks for work.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseRequest {
    pub capabilities: Capabilities,
    /// How long to wait for work when there is none now, in milliseconds (at most 30,000;
    /// 0 answers at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// How a job ended on its host: the host's own record of the build and its logs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The host's record of the build (`builds show --json` on the host).
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
    /// Each step's log: (step, text).
    pub logs: Vec<(String, String)>,
}

/// A build host, as the farm knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub name: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub last_seen: Option<i64>,
    pub capabilities: Capabilities,
}

/// A new enrollment key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyRequest {
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// An enrollment key, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Key {
    pub id: String,
    pub secret: String,
    pub expires_at: i64,
}

/// A new API token for a person.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
}

/// An API token: its secret only when it is made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One change made through the API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Keep a build from purges, or let it go again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeepRequest {
    pub keep: bool,
}

/// Publish a build: `published/SYSTEM`, or `published/SYSTEM@TAG`, on the server.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishRequest {
    pub tag: Option<String>,
}

/// A binary package of a binhost: its path under the binhost (`CATEGORY/PN/PF-BUILD_ID.gpkg.tar`,
/// as Portage lays out a multi-instance PKGDIR), its SHA-256 and size, and its entry in the
/// binhost's Portage `Packages` index (`CPV`, `USE`, dependencies, …; `PATH` and `SIZE` as
/// here). A package without an entry is served to hosts but left out of the index.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Package {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// What publishing a job's packages did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    /// Packages new to the binhost.
    pub added: Vec<String>,
    /// Packages the binhost had under the same path already (the first one stays).
    pub kept: Vec<String>,
}
