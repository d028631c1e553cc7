//! The build database: every `build` recorded with its steps, logs and artifacts, in SQLite
//! (`WORKDIR/autogentoo.db`, nothing to set up) or PostgreSQL (a farm's). One set of
//! migrations serves both; it is applied when the database is opened, and a database whose
//! schema is newer than this program's is refused. Opening also marks the builds whose process
//! died as interrupted, so none stays "running" forever.
//!
//! The API is blocking: the database runs on a runtime of its own, so a synchronous caller
//! (the command line, the pipeline's observer) never sees async.

mod diff;
mod location;
mod process;
mod recorder;
mod remote;
mod retention;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row};

pub use diff::{Changed, Diff, InputChange};
pub use location::{Location, SQLITE_FILE, URL_VAR};
pub use process::Process;
pub use recorder::{BuildInfo, Recorder};
pub use remote::RemoteStart;

/// The schema, versioned; `migrations/` in this crate.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why the database could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("`{shown}` is not a database URL: use postgres://USER@HOST/DB or sqlite://PATH")]
    BadUrl { shown: String },
    #[error("cannot read the database password from {}", path.display())]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the build database's runtime or its recorder's thread")]
    Runtime(#[source] std::io::Error),
    #[error("cannot open the build database {shown}")]
    Open {
        shown: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the build database {shown} has schema version {found}, newer than this autogentoo \
         knows ({known}); upgrade autogentoo, or point it at another database"
    )]
    NewerSchema {
        shown: String,
        found: i64,
        known: i64,
    },
    #[error("cannot bring the schema of the build database {shown} up to date")]
    Migrate {
        shown: String,
        #[source]
        source: MigrateError,
    },
    #[error("cannot {what} in the build database {shown}")]
    Query {
        what: String,
        shown: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "no build {number} of system '{system}' is recorded; `autogentoo builds list {system}` \
         shows those that are"
    )]
    NoBuild { system: String, number: i64 },
    #[error(
        "build {number} of system '{system}' {outcome}; only a build that succeeded can be \
         published"
    )]
    NotPublishable {
        system: String,
        number: i64,
        outcome: Outcome,
    },
    #[error("cannot publish build {number} of system '{system}' at {}", link.display())]
    Publish {
        system: String,
        number: i64,
        link: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the results of build {number} of system '{system}' in {}", dir.display())]
    Purge {
        system: String,
        number: i64,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the partial results a killed build left in {}", dir.display())]
    Leftovers {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the results of build {number} of system '{system}' in {}", dir.display())]
    Keep {
        system: String,
        number: i64,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a build ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
    /// Its process died (killed, or the host went down) before it ended.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => Self::Interrupted,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Build {
    pub system: String,
    pub number: i64,
    pub host: String,
    pub started_by: String,
    pub pid: i64,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub config_hash: String,
    pub stage: String,
    pub repo: String,
    pub packages: Vec<String>,
    /// SHA-256 over the site config's hash, the stage, the snapshot and the packages.
    pub inputs: String,
    /// Where its results are kept.
    pub out_dir: PathBuf,
    /// Spared by purges.
    pub kept: bool,
}

/// One step of a recorded build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    /// `ran`, `skipped` or `failed`.
    pub outcome: String,
    pub why: String,
    pub duration_ms: Option<i64>,
    pub summary: Option<String>,
    pub error: Option<String>,
}

/// One file of a recorded build's results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub kind: String,
    pub step: String,
    /// Made by this build, or kept from an earlier one by a skipped step.
    pub made: bool,
    pub size: i64,
    pub sha256: String,
    /// In the build's `out_dir`.
    pub path: PathBuf,
}

/// What the recorder writes together, in one transaction: the steps ended since the last
/// write (in order, with their positions), their logs, the artifacts, and the build's end.
#[derive(Default)]
pub(crate) struct Batch {
    pub steps: Vec<(i64, Step)>,
    pub logs: Vec<(String, i64, Vec<u8>)>,
    pub artifacts: Vec<Artifact>,
    pub end: Option<End>,
}

/// How a build ended, for its record.
pub(crate) struct End {
    pub outcome: Outcome,
    pub error: Option<String>,
    pub contents: Option<String>,
}

/// A recorded build with its steps and artifacts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub build: Build,
    pub steps: Vec<Step>,
    pub artifacts: Vec<Artifact>,
    /// The image's packages (`CATEGORY/PF:SLOT USE="…"`), for a system with an image.
    pub contents: Option<String>,
}

/// An open build database.
pub struct Database {
    runtime: tokio::runtime::Runtime,
    pool: AnyPool,
    location: Location,
}

/// Closing waits for the connections to close: SQLite's last one folds its write-ahead log
/// into the file and removes it, so the next process opens a small database, not one that must
/// read back every record since the last checkpoint.
impl Drop for Database {
    fn drop(&mut self) {
        self.runtime.block_on(self.pool.close());
    }
}

/// The columns [`build_of`] reads, in its order.
macro_rules! build_columns {
    () => {
        "system, number, host, started_by, pid, started_at, ended_at, outcome, error, \
         config_hash, stage, repo, packages, inputs, out_dir, kept"
    };
}

/// How to connect to the database at `location`, with at most `max_connections`. SQLite's
/// connections are set up for several writers (several builds, or a farm server's API and its
/// own worker's builds): WAL lets readers go on, and the busy timeout makes writers wait for
/// each other rather than fail. In WAL mode `synchronous = NORMAL` syncs at checkpoints rather
/// than at every commit: a power cut can lose the last records, never corrupt the file.
pub fn pool_options(location: &Location, max_connections: u32) -> AnyPoolOptions {
    let sqlite = matches!(location, Location::Sqlite(_));
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if sqlite {
                    for pragma in [
                        "PRAGMA busy_timeout = 30000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        sqlx::query(pragma).execute(&mut *connection).await?;
                    }
                }
                Ok(())
            })
        })
}

impl Database {
    /// Opens (creating a SQLite file when missing) and migrates the database, then marks the
    /// builds of this host whose process is gone as interrupted.
    pub fn open(location: &Location) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DbError::Runtime)?;
        let shown = location.shown();
        if let Location::Sqlite(path) = location {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| DbError::Open {
                    shown: shown.clone(),
                    source: sqlx::Error::Io(source),
                })?;
            }
        }
        let sqlite = matches!(location, Location::Sqlite(_));
        let pool = runtime
            .block_on(
                // One process records one build at a time: a connection of SQLite's is enough,
                // and opening a second costs more than waiting for the first.
                pool_options(location, if sqlite { 1 } else { 4 }).connect(&location.connect_url()),
            )
            .map_err(|source| DbError::Open {
                shown: shown.clone(),
                source,
            })?;
        let database = Self {
            runtime,
            pool,
            location: location.clone(),
        };
        database.migrate()?;
        database.mark_interrupted()?;
        Ok(database)
    }

    /// Where it is, as errors and listings name it.
    pub fn shown(&self) -> String {
        self.location.shown()
    }

    fn migrate(&self) -> Result<(), DbError> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        match self.runtime.block_on(MIGRATOR.run(&self.pool)) {
            Ok(()) => Ok(()),
            Err(MigrateError::VersionMissing(found)) => Err(DbError::NewerSchema {
                shown: self.shown(),
                found,
                known,
            }),
            Err(source) => Err(DbError::Migrate {
                shown: self.shown(),
                source,
            }),
        }
    }

    fn query_error(&self, what: &str) -> impl FnOnce(sqlx::Error) -> DbError + '_ {
        let what = what.to_owned();
        move |source| DbError::Query {
            what,
            shown: self.shown(),
            source,
        }
    }

    /// Marks the running builds of this host whose process is gone as interrupted (done on
    /// open; again by whoever waits for a build to end).
    pub fn mark_interrupted(&self) -> Result<(), DbError> {
        let host = process::host_name();
        let rows = self.fetch_all(
            "look for running builds",
            sqlx::query(
                // A build with no PID (0) is a farm server's record of a host's build: the
                // host's lease decides its fate, not a process of this machine.
                "SELECT system, number, pid, pid_start, boot_id FROM builds \
                 WHERE outcome = 'running' AND host = $1 AND pid <> 0",
            )
            .bind(&host),
        )?;
        for row in rows {
            let system: String = row.try_get(0).map_err(self.query_error("read a build"))?;
            let number: i64 = row.try_get(1).map_err(self.query_error("read a build"))?;
            let process = Process {
                host: host.clone(),
                pid: row.try_get(2).map_err(self.query_error("read a build"))?,
                start: row.try_get(3).map_err(self.query_error("read a build"))?,
                boot_id: row.try_get(4).map_err(self.query_error("read a build"))?,
            };
            if process.is_alive() == Some(false) {
                tracing::info!("build {number} of system '{system}' was interrupted");
                self.execute(
                    "mark a build interrupted",
                    sqlx::query(
                        "UPDATE builds SET outcome = 'interrupted', ended_at = $1, error = $2 \
                         WHERE system = $3 AND number = $4 AND outcome = 'running'",
                    )
                    .bind(now_ms())
                    .bind(format!(
                        "its process (PID {} on {}) ended before the build did",
                        process.pid, process.host
                    ))
                    .bind(&system)
                    .bind(number),
                )?;
            }
        }
        Ok(())
    }

    /// Records the start of a build; returns its number, one more than the system's last.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        &self,
        system: &str,
        started_by: &str,
        config_hash: &str,
        inputs: &autogentoo_pipeline::Inputs,
        fingerprint: &str,
        out_root: &Path,
    ) -> Result<(i64, PathBuf), DbError> {
        let process = Process::this();
        let system_out = out_root.join(system).display().to_string();
        let row = self
            .runtime
            .block_on(
                sqlx::query(
                    "INSERT INTO builds (system, number, host, started_by, pid, pid_start, \
                     boot_id, started_at, outcome, config_hash, stage, repo, packages, inputs, \
                     out_dir) \
                     SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5, $6, $7, 'running', \
                     $8, $9, $10, $11, $12, $13 || '/' || CAST(COALESCE(MAX(number), 0) + 1 AS TEXT) \
                     FROM builds WHERE system = $14 \
                     RETURNING number, out_dir",
                )
                .bind(system)
                .bind(&process.host)
                .bind(started_by)
                .bind(process.pid)
                .bind(process.start)
                .bind(&process.boot_id)
                .bind(now_ms())
                .bind(config_hash)
                .bind(&inputs.stage)
                .bind(&inputs.repo)
                .bind(inputs.packages.join("\n"))
                .bind(fingerprint)
                .bind(system_out)
                .bind(system)
                .fetch_one(&self.pool),
            )
            .map_err(self.query_error("record a new build"))?;
        let read = |row: &AnyRow| -> Result<(i64, String), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        };
        let (number, out_dir) = read(&row).map_err(self.query_error("record a new build"))?;
        Ok((number, PathBuf::from(out_dir)))
    }

    /// Runs a query for its rows; `what` names it in errors.
    fn fetch_all<'q>(
        &self,
        what: &str,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<AnyRow>, DbError> {
        self.runtime
            .block_on(query.fetch_all(&self.pool))
            .map_err(self.query_error(what))
    }

    fn execute<'q>(
        &self,
        what: &str,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<(), DbError> {
        self.runtime
            .block_on(query.execute(&self.pool))
            .map(drop)
            .map_err(self.query_error(what))
    }

    /// Writes `batch` for build `number` of `system`, in one transaction.
    pub(crate) fn write(&self, system: &str, number: i64, batch: Batch) -> Result<(), DbError> {
        let what = "record a build's steps and results";
        self.runtime
            .block_on(async {
                let mut tx = self.pool.begin().await?;
                for (position, step) in &batch.steps {
                    sqlx::query(
                        "INSERT INTO build_steps (system, number, position, step, outcome, why, \
                         duration_ms, summary, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(system)
                    .bind(number)
                    .bind(*position)
                    .bind(&step.step)
                    .bind(&step.outcome)
                    .bind(&step.why)
                    .bind(step.duration_ms)
                    .bind(step.summary.clone())
                    .bind(step.error.clone())
                    .execute(&mut *tx)
                    .await?;
                }
                for (step, lines, compressed) in batch.logs {
                    sqlx::query(
                        "INSERT INTO build_logs (system, number, step, lines, compressed) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(system)
                    .bind(number)
                    .bind(step)
                    .bind(lines)
                    .bind(compressed)
                    .execute(&mut *tx)
                    .await?;
                }
                for artifact in &batch.artifacts {
                    sqlx::query(
                        "INSERT INTO build_artifacts (system, number, name, kind, step, made, \
                         size, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(system)
                    .bind(number)
                    .bind(&artifact.name)
                    .bind(&artifact.kind)
                    .bind(&artifact.step)
                    .bind(i64::from(artifact.made))
                    .bind(artifact.size)
                    .bind(&artifact.sha256)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(end) = batch.end {
                    sqlx::query(
                        "UPDATE builds SET outcome = $1, ended_at = $2, error = $3, \
                         contents = $4 WHERE system = $5 AND number = $6",
                    )
                    .bind(end.outcome.as_str())
                    .bind(now_ms())
                    .bind(end.error)
                    .bind(end.contents)
                    .bind(system)
                    .bind(number)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            })
            .map_err(self.query_error(what))
    }

    /// The artifacts of the newest build of a system that kept any: by name, where each is
    /// kept, its size and hash.
    pub(crate) fn last_artifacts(
        &self,
        system: &str,
    ) -> Result<BTreeMap<String, (PathBuf, i64, String)>, DbError> {
        let what = "look up the artifacts of the build before";
        let rows = self.fetch_all(
            what,
            sqlx::query(
                "SELECT a.name, b.out_dir, a.size, a.sha256 FROM build_artifacts a JOIN builds b \
                 ON b.system = a.system AND b.number = a.number WHERE a.system = $1 AND \
                 a.number = (SELECT MAX(number) FROM build_artifacts WHERE system = $2)",
            )
            .bind(system)
            .bind(system),
        )?;
        let read = |row: &AnyRow| -> Result<(String, (PathBuf, i64, String)), sqlx::Error> {
            let name: String = row.try_get(0)?;
            let out_dir: String = row.try_get(1)?;
            Ok((
                name.clone(),
                (
                    PathBuf::from(out_dir).join(name),
                    row.try_get(2)?,
                    row.try_get(3)?,
                ),
            ))
        };
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(self.query_error(what))
    }

    /// The builds recorded, newest first: of one system, or of all; at most `limit`.
    pub fn list(&self, system: Option<&str>, limit: i64) -> Result<Vec<Build>, DbError> {
        let query = match system {
            Some(system) => sqlx::query(concat!(
                "SELECT ",
                build_columns!(),
                " FROM builds WHERE system = $1 ORDER BY number DESC LIMIT $2"
            ))
            .bind(system)
            .bind(limit),
            None => sqlx::query(concat!(
                "SELECT ",
                build_columns!(),
                " FROM builds ORDER BY started_at DESC LIMIT $1"
            ))
            .bind(limit),
        };
        let rows = self.fetch_all("list the builds", query)?;
        rows.iter()
            .map(|row| build_of(row).map_err(self.query_error("read a build")))
            .collect()
    }

    /// One build with its steps and artifacts.
    pub fn get(&self, system: &str, number: i64) -> Result<BuildDetail, DbError> {
        let read = "read a build";
        let row = self
            .runtime
            .block_on(
                sqlx::query(concat!(
                    "SELECT ",
                    build_columns!(),
                    ", contents FROM builds WHERE system = $1 AND number = $2"
                ))
                .bind(system)
                .bind(number)
                .fetch_optional(&self.pool),
            )
            .map_err(self.query_error(read))?
            .ok_or_else(|| DbError::NoBuild {
                system: system.to_owned(),
                number,
            })?;
        let build = build_of(&row).map_err(self.query_error(read))?;
        let contents: Option<String> = row.try_get(16).map_err(self.query_error(read))?;
        let steps = self
            .fetch_all(
                read,
                sqlx::query(
                    "SELECT step, outcome, why, duration_ms, summary, error FROM build_steps \
                     WHERE system = $1 AND number = $2 ORDER BY position",
                )
                .bind(system)
                .bind(number),
            )?
            .iter()
            .map(|row| {
                Ok(Step {
                    step: row.try_get(0)?,
                    outcome: row.try_get(1)?,
                    why: row.try_get(2)?,
                    duration_ms: row.try_get(3)?,
                    summary: row.try_get(4)?,
                    error: row.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(self.query_error(read))?;
        let artifacts = self
            .fetch_all(
                read,
                sqlx::query(
                    "SELECT name, kind, step, made, size, sha256 FROM build_artifacts \
                     WHERE system = $1 AND number = $2 ORDER BY name",
                )
                .bind(system)
                .bind(number),
            )?
            .iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                Ok(Artifact {
                    path: build.out_dir.join(&name),
                    name,
                    kind: row.try_get(1)?,
                    step: row.try_get(2)?,
                    made: row.try_get::<i64, _>(3)? != 0,
                    size: row.try_get(4)?,
                    sha256: row.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(self.query_error(read))?;
        Ok(BuildDetail {
            build,
            steps,
            artifacts,
            contents,
        })
    }

    /// The logs of a build's steps, in step order, decompressed: of one step, or of all.
    pub fn logs(
        &self,
        system: &str,
        number: i64,
        step: Option<&str>,
    ) -> Result<Vec<(String, String)>, DbError> {
        self.get(system, number)?;
        let read = "read a build's logs";
        let rows = self.fetch_all(
            read,
            sqlx::query(
                "SELECT l.step, l.compressed FROM build_logs l JOIN build_steps s \
                 ON s.system = l.system AND s.number = l.number AND s.step = l.step \
                 WHERE l.system = $1 AND l.number = $2 ORDER BY s.position",
            )
            .bind(system)
            .bind(number),
        )?;
        let mut logs = Vec::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(self.query_error(read))?;
            if step.is_some_and(|wanted| wanted != name) {
                continue;
            }
            let compressed: Vec<u8> = row.try_get(1).map_err(self.query_error(read))?;
            let text =
                zstd::decode_all(compressed.as_slice()).map_err(|source| DbError::Query {
                    what: format!("decompress the log of step {name}"),
                    shown: self.shown(),
                    source: sqlx::Error::Io(source),
                })?;
            logs.push((name, String::from_utf8_lossy(&text).into_owned()));
        }
        Ok(logs)
    }
}

fn build_of(row: &AnyRow) -> Result<Build, sqlx::Error> {
    let packages: String = row.try_get(12)?;
    let out_dir: String = row.try_get(14)?;
    Ok(Build {
        system: row.try_get(0)?,
        number: row.try_get(1)?,
        host: row.try_get(2)?,
        started_by: row.try_get(3)?,
        pid: row.try_get(4)?,
        started_at: row.try_get(5)?,
        ended_at: row.try_get(6)?,
        outcome: Outcome::parse(&row.try_get::<String, _>(7)?),
        error: row.try_get(8)?,
        config_hash: row.try_get(9)?,
        stage: row.try_get(10)?,
        repo: row.try_get(11)?,
        packages: packages.lines().map(str::to_owned).collect(),
        inputs: row.try_get(13)?,
        out_dir: PathBuf::from(out_dir),
        kept: row.try_get::<i64, _>(15)? != 0,
    })
}

/// Where a publication points: `published/SYSTEM`, or `published/SYSTEM@TAG`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub system: String,
    /// Empty for the system's own link.
    pub tag: String,
    pub number: i64,
    pub published_at: i64,
    pub published_by: String,
    pub link: PathBuf,
}

impl Database {
    /// Keeps a build from purges, or lets it go again (`keep` false).
    pub fn keep(&self, system: &str, number: i64, keep: bool) -> Result<(), DbError> {
        self.get(system, number)?;
        self.execute(
            "keep a build",
            sqlx::query("UPDATE builds SET kept = $1 WHERE system = $2 AND number = $3")
                .bind(i64::from(keep))
                .bind(system)
                .bind(number),
        )
    }

    /// Points `published_dir/SYSTEM` (or `SYSTEM@TAG`) at a build's results, atomically (a new
    /// link renamed over the old), and records it.
    pub fn publish(
        &self,
        system: &str,
        number: i64,
        tag: Option<&str>,
        by: &str,
        published_dir: &Path,
    ) -> Result<Publication, DbError> {
        let detail = self.get(system, number)?;
        if detail.build.outcome != Outcome::Succeeded {
            return Err(DbError::NotPublishable {
                system: system.to_owned(),
                number,
                outcome: detail.build.outcome,
            });
        }
        let name = match tag {
            Some(tag) => format!("{system}@{tag}"),
            None => system.to_owned(),
        };
        let link = published_dir.join(&name);
        let failed = |source| DbError::Publish {
            system: system.to_owned(),
            number,
            link: link.clone(),
            source,
        };
        std::fs::create_dir_all(published_dir).map_err(failed)?;
        // Relative, so the workdir can move: published/NAME -> ../out/SYSTEM/N.
        let target = Path::new("..")
            .join(
                detail
                    .build
                    .out_dir
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .unwrap_or_default(),
            )
            .join(system)
            .join(number.to_string());
        let staging = published_dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&target, &staging).map_err(failed)?;
        std::fs::rename(&staging, &link).map_err(|e| {
            let _ = std::fs::remove_file(&staging);
            failed(e)
        })?;
        let tag = tag.unwrap_or_default();
        let now = now_ms();
        self.execute(
            "record a publication",
            sqlx::query("DELETE FROM published WHERE system = $1 AND tag = $2")
                .bind(system)
                .bind(tag),
        )?;
        self.execute(
            "record a publication",
            sqlx::query(
                "INSERT INTO published (system, tag, number, published_at, published_by) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(system)
            .bind(tag)
            .bind(number)
            .bind(now)
            .bind(by),
        )?;
        Ok(Publication {
            system: system.to_owned(),
            tag: tag.to_owned(),
            number,
            published_at: now,
            published_by: by.to_owned(),
            link,
        })
    }

    /// What changed from build `a` to build `b` of a system.
    pub fn diff(&self, system: &str, a: i64, b: i64) -> Result<Diff, DbError> {
        let first = self.get(system, a)?;
        let second = self.get(system, b)?;
        Ok(diff::diff(
            &first.build,
            first.contents.as_deref(),
            &second.build,
            second.contents.as_deref(),
        ))
    }

    /// Removes the builds the retention policy lets go (of one system, or of all), their
    /// records and their results; with `pretend`, only says which. Returns them.
    pub fn purge(
        &self,
        system: Option<&str>,
        policy: &autogentoo_core::site_config::RetentionSection,
        pretend: bool,
    ) -> Result<Vec<Build>, DbError> {
        let read = "read the builds to purge";
        let rows = self.fetch_all(
            read,
            sqlx::query(
                "SELECT b.system, b.number, b.started_at, b.kept, b.outcome, \
                 (SELECT COUNT(*) FROM published p \
                  WHERE p.system = b.system AND p.number = b.number) \
                 FROM builds b",
            ),
        )?;
        let mut by_system: std::collections::BTreeMap<String, Vec<retention::Candidate>> =
            std::collections::BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(self.query_error(read))?;
            if system.is_some_and(|wanted| wanted != name) {
                continue;
            }
            let outcome: String = row.try_get(4).map_err(self.query_error(read))?;
            let kept: i64 = row.try_get(3).map_err(self.query_error(read))?;
            let published: i64 = row.try_get(5).map_err(self.query_error(read))?;
            by_system
                .entry(name)
                .or_default()
                .push(retention::Candidate {
                    number: row.try_get(1).map_err(self.query_error(read))?,
                    started_at: row.try_get(2).map_err(self.query_error(read))?,
                    protected: kept != 0 || published != 0 || outcome == "running",
                    succeeded: outcome == "succeeded",
                });
        }
        let now = now_ms();
        let mut purged = Vec::new();
        for (name, candidates) in by_system {
            for number in retention::to_purge(&candidates, policy, now) {
                let build = self.get(&name, number)?.build;
                if !pretend {
                    match std::fs::remove_dir_all(&build.out_dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(DbError::Purge {
                                system: name.clone(),
                                number,
                                dir: build.out_dir.clone(),
                                source: e,
                            })
                        }
                        _ => {}
                    }
                    self.execute(
                        "remove a purged build",
                        sqlx::query("DELETE FROM builds WHERE system = $1 AND number = $2")
                            .bind(&name)
                            .bind(number),
                    )?;
                }
                purged.push(build);
            }
        }
        Ok(purged)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(i64::MAX))
}
