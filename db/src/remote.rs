//! Builds that ran on a farm's build host, recorded by the server: the record is made when a
//! host takes the job (so the build is listed as running on that host while it runs), and
//! completed from the host's own record of it when the host reports its result. A job that
//! is handed to another host after the first was lost keeps its one record.

use std::path::Path;

use sqlx::Row;

use crate::recorder::LOG_LEVEL;
use crate::{now_ms, Batch, BuildDetail, Database, DbError, End, Outcome};

/// A farm job's build as a host takes it.
#[derive(Clone, Debug)]
pub struct RemoteStart<'a> {
    pub system: &'a str,
    /// The build host's enrolled name.
    pub host: &'a str,
    /// Who submitted the job.
    pub started_by: &'a str,
    pub config_hash: &'a str,
    /// The server's `out` directory: the build's results are kept in `OUT/SYSTEM/N`.
    pub out_root: &'a Path,
}

impl Database {
    /// Records that a host started a farm job's build and returns its number: a new one, or
    /// `number` again (running now on `start.host`) for a job that was handed on.
    pub fn begin_remote(&self, start: &RemoteStart, number: Option<i64>) -> Result<i64, DbError> {
        let what = "record a farm build";
        if let Some(number) = number {
            self.execute(
                what,
                sqlx::query(
                    "UPDATE builds SET host = $1, started_at = $2, outcome = 'running', \
                     ended_at = NULL, error = NULL WHERE system = $3 AND number = $4",
                )
                .bind(start.host)
                .bind(now_ms())
                .bind(start.system)
                .bind(number),
            )?;
            return Ok(number);
        }
        let system_out = start.out_root.join(start.system).display().to_string();
        let rows = self.fetch_all(
            what,
            sqlx::query(
                "INSERT INTO builds (system, number, host, started_by, pid, pid_start, boot_id, \
                 started_at, outcome, config_hash, stage, repo, packages, inputs, out_dir) \
                 SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, 0, 0, '', $4, 'running', $5, \
                 '', '', '', '', $6 || '/' || CAST(COALESCE(MAX(number), 0) + 1 AS TEXT) \
                 FROM builds WHERE system = $7 RETURNING number",
            )
            .bind(start.system)
            .bind(start.host)
            .bind(start.started_by)
            .bind(now_ms())
            .bind(start.config_hash)
            .bind(system_out)
            .bind(start.system),
        )?;
        let row = rows.first().ok_or_else(|| DbError::Query {
            what: what.to_owned(),
            shown: self.shown(),
            source: sqlx::Error::RowNotFound,
        })?;
        row.try_get(0).map_err(self.query_error(what))
    }

    /// Completes build `number` of `system` from the host's own record of it (`host_record`)
    /// and its logs: its inputs, steps, logs, artifacts (kept by the caller in the build's
    /// `out_dir`) and how it ended.
    pub fn finish_remote(
        &self,
        system: &str,
        number: i64,
        host_record: &BuildDetail,
        logs: &[(String, String)],
    ) -> Result<(), DbError> {
        let build = &host_record.build;
        self.execute(
            "record a farm build's inputs",
            sqlx::query(
                "UPDATE builds SET stage = $1, repo = $2, packages = $3, inputs = $4 \
                 WHERE system = $5 AND number = $6",
            )
            .bind(&build.stage)
            .bind(&build.repo)
            .bind(build.packages.join("\n"))
            .bind(&build.inputs)
            .bind(system)
            .bind(number),
        )?;
        let mut batch = Batch {
            steps: host_record
                .steps
                .iter()
                .cloned()
                .enumerate()
                .map(|(position, step)| (position as i64, step))
                .collect(),
            artifacts: host_record.artifacts.clone(),
            end: Some(End {
                outcome: build.outcome,
                error: build.error.clone(),
                contents: host_record.contents.clone(),
            }),
            ..Batch::default()
        };
        for (step, text) in logs {
            let compressed =
                zstd::encode_all(text.as_bytes(), LOG_LEVEL).map_err(|source| DbError::Query {
                    what: format!("compress the log of step {step}"),
                    shown: self.shown(),
                    source: sqlx::Error::Io(source),
                })?;
            batch
                .logs
                .push((step.clone(), text.lines().count() as i64, compressed));
        }
        self.write(system, number, batch)
    }

    /// Ends a farm build that will not complete (its job was given up), with why.
    pub fn end_remote(
        &self,
        system: &str,
        number: i64,
        outcome: Outcome,
        error: &str,
    ) -> Result<(), DbError> {
        self.execute(
            "end a farm build",
            sqlx::query(
                "UPDATE builds SET outcome = $1, ended_at = $2, error = $3 \
                 WHERE system = $4 AND number = $5 AND outcome = 'running'",
            )
            .bind(outcome.as_str())
            .bind(now_ms())
            .bind(error)
            .bind(system)
            .bind(number),
        )
    }
}
