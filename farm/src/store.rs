//! The farm's own tables (migration `0003_farm.sql` of the build database): tokens, enrollment
//! keys, hosts, jobs, their events, the audit log. Every query is one statement or one
//! transaction, so that a refused request changes nothing; and plain SQL that PostgreSQL (a
//! farm) and SQLite (one machine) both run, through sqlx's `Any` driver.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::api_types::{AuditEntry, Capabilities, Host, Input, InputRecord, Job, Token};
use crate::role::Role;
use crate::secret::{self, Kind};

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnrollRefused {
    #[error("the enrollment key is not known; make one with `autogentoo farm key create`")]
    Unknown,
    #[error("the enrollment key was used already (by host '{0}'); make a new one")]
    Used(String),
    #[error("the enrollment key expired; make a new one")]
    Expired,
    #[error("a host named '{0}' is enrolled already; choose another name, or revoke that host")]
    NameTaken(String),
}

/// A job as submitted.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub system: &'a str,
    pub arch: &'a str,
    pub backend: Option<&'a str>,
    pub config_hash: &'a str,
    pub idempotency_key: &'a str,
    pub submitted_by: &'a str,
    pub inputs: &'a [Input],
}

/// The farm's tables.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The queue's table of jobs (apalis's): `apalis.jobs` in PostgreSQL, `Jobs` in SQLite.
    queue_jobs: &'static str,
}

pub fn now_ms() -> i64 {
    autogentoo_db::now_ms()
}

/// The columns [`job_of`] reads, in its order.
macro_rules! job_columns {
    () => {
        "id, system, arch, config_hash, state, host, attempt, build_number, submitted_by, \
         submitted_at, ended_at, error, backend, inputs"
    };
}

fn job_of(row: &AnyRow) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: row.try_get(0)?,
        system: row.try_get(1)?,
        arch: row.try_get(2)?,
        config_hash: row.try_get(3)?,
        state: row.try_get(4)?,
        host: row.try_get(5)?,
        attempt: row.try_get(6)?,
        build_number: row.try_get(7)?,
        submitted_by: row.try_get(8)?,
        submitted_at: row.try_get(9)?,
        ended_at: row.try_get(10)?,
        error: row.try_get(11)?,
        backend: row.try_get(12)?,
        inputs: serde_json::from_str(row.try_get(13)?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

impl Store {
    /// The farm's tables in `pool`, beside the queue's table of jobs `queue_jobs`.
    pub fn new(pool: AnyPool, queue_jobs: &'static str) -> Self {
        Self { pool, queue_jobs }
    }

    // --- people's tokens

    /// Makes a token; returns its secret (shown once).
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        by: &str,
    ) -> Result<Option<Token>, sqlx::Error> {
        let secret = secret::new(Kind::Token);
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO farm_tokens (name, role, secret_sha256, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(secret::sha256(&secret))
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then(|| Token {
            name: name.to_owned(),
            role,
            created_at: now,
            created_by: by.to_owned(),
            revoked_at: None,
            secret: Some(secret),
        }))
    }

    /// The person a token secret belongs to, and their role; `None` for an unknown or revoked
    /// token.
    pub async fn person(&self, secret: &str) -> Result<Option<(String, Role)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT name, role FROM farm_tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(secret::sha256(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|row| {
            let name: String = row.get(0);
            Role::parse(row.get::<&str, _>(1)).map(|role| (name, role))
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<Token>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, role, created_at, created_by, revoked_at FROM farm_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| Token {
                name: row.get(0),
                role: Role::parse(row.get::<&str, _>(1)).unwrap_or(Role::Viewer),
                created_at: row.get(2),
                created_by: row.get(3),
                revoked_at: row.get(4),
                secret: None,
            })
            .collect())
    }

    /// Revokes a token; false when there is no such token in use.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE farm_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // --- enrollment keys and hosts

    /// Makes a one-time enrollment key good for `expires_in_ms`; returns (id, secret, expiry).
    pub async fn create_key(
        &self,
        expires_in_ms: i64,
        by: &str,
    ) -> Result<(String, String, i64), sqlx::Error> {
        let id = secret::random_hex(6);
        let secret = secret::new(Kind::EnrollmentKey);
        let now = now_ms();
        let expires_at = now.saturating_add(expires_in_ms);
        sqlx::query(
            "INSERT INTO farm_enrollment_keys (id, secret_sha256, created_at, created_by, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(secret::sha256(&secret))
        .bind(now)
        .bind(by)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok((id, secret, expires_at))
    }

    /// Spends an enrollment key on a new host `name`; returns the host's secret. The key and
    /// the host change together or not at all.
    pub async fn enroll(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Result<(String, String), EnrollRefused>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        // Spent first, in one statement: of two hosts enrolling with one key, the second finds
        // it used (PostgreSQL re-reads the row the first locked; SQLite writes one at a time).
        let spent = sqlx::query(
            "UPDATE farm_enrollment_keys SET used_at = $1, used_by = $2 \
             WHERE secret_sha256 = $3 AND used_at IS NULL AND expires_at > $1 RETURNING id",
        )
        .bind(now)
        .bind(name)
        .bind(secret::sha256(key))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(spent) = spent else {
            let row =
                sqlx::query("SELECT used_by FROM farm_enrollment_keys WHERE secret_sha256 = $1")
                    .bind(secret::sha256(key))
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(Err(match row {
                None => EnrollRefused::Unknown,
                Some(row) => match row.get::<Option<String>, _>(0) {
                    Some(used_by) => EnrollRefused::Used(used_by),
                    None => EnrollRefused::Expired,
                },
            }));
        };
        let key_id: String = spent.get(0);
        let host_secret = secret::new(Kind::Host);
        let inserted = sqlx::query(
            "INSERT INTO farm_hosts (name, secret_sha256, key_id, enrolled_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(secret::sha256(&host_secret))
        .bind(&key_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // The key stays unspent: the transaction is rolled back.
            return Ok(Err(EnrollRefused::NameTaken(name.to_owned())));
        }
        tx.commit().await?;
        Ok(Ok((key_id, host_secret)))
    }

    /// The host a host secret belongs to; `None` for an unknown or revoked host.
    pub async fn host_of(&self, secret: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT name FROM farm_hosts WHERE secret_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(secret::sha256(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Whether host `name` is enrolled and not revoked.
    pub async fn host_active(&self, name: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM farm_hosts WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Notes that a host is alive, with what it can build.
    pub async fn touch_host(&self, name: &str, caps: &Capabilities) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE farm_hosts SET last_seen = $1, capabilities = $2 WHERE name = $3")
            .bind(now_ms())
            .bind(serde_json::to_string(caps).unwrap_or_default())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn hosts(&self) -> Result<Vec<Host>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, enrolled_at, revoked_at, last_seen, capabilities FROM farm_hosts \
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| Host {
                name: row.get(0),
                enrolled_at: row.get(1),
                revoked_at: row.get(2),
                last_seen: row.get(3),
                capabilities: serde_json::from_str(row.get::<&str, _>(4)).unwrap_or_default(),
            })
            .collect())
    }

    /// Revokes a host: its credential and its jobs' credentials stop working at once.
    pub async fn revoke_host(&self, name: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE farm_hosts SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether an enrolled, unrevoked host runs natively for `arch` and was seen since `since`.
    pub async fn native_host_alive(&self, arch: &str, since: i64) -> Result<bool, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT capabilities FROM farm_hosts WHERE revoked_at IS NULL AND last_seen >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().any(|row| {
            serde_json::from_str::<Capabilities>(row.get::<&str, _>(0))
                .is_ok_and(|caps| caps.arches.iter().any(|a| a.arch == arch && a.native))
        }))
    }

    // --- jobs

    /// Records a submitted job; `None` when a job with its idempotency key exists (returned by
    /// [`Store::job_by_key`]).
    pub async fn insert_job(&self, job: &NewJob<'_>) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "INSERT INTO farm_jobs (id, system, arch, config_hash, idempotency_key, \
             submitted_by, submitted_at, backend, inputs, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued') \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
            job_columns!(),
            ""
        ))
        .bind(job.id)
        .bind(job.system)
        .bind(job.arch)
        .bind(job.config_hash)
        .bind(job.idempotency_key)
        .bind(job.submitted_by)
        .bind(now_ms())
        .bind(job.backend)
        .bind(serde_json::to_string(job.inputs).unwrap_or_else(|_| "[]".into()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    pub async fn job_by_key(&self, key: &str) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    /// Sets a failed or cancelled job aside so that the same build can be submitted again:
    /// its idempotency key gets its id appended. False when the job is not failed (any more).
    pub async fn retire_failed(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE farm_jobs SET idempotency_key = idempotency_key || '#' || id \
             WHERE id = $1 AND state IN ('failed', 'cancelled')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a job that could not be queued.
    pub async fn delete_job(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM farm_jobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    /// The jobs, newest first.
    pub async fn jobs(&self, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs ORDER BY submitted_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_of).collect()
    }

    /// Hands a job to `host` for `attempt` with a new credential (returned); the credential of
    /// any earlier attempt stops working. `None` when the job was cancelled meanwhile.
    pub async fn lease_job(
        &self,
        id: &str,
        host: &str,
        attempt: i64,
        build_number: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        let secret = secret::new(Kind::Job);
        let done = sqlx::query(
            "UPDATE farm_jobs SET state = 'running', host = $1, attempt = $2, lease_sha256 = $3, \
             leased_at = $4, build_number = $5 WHERE id = $6 AND state IN ('queued', 'running')",
        )
        .bind(host)
        .bind(attempt)
        .bind(secret::sha256(&secret))
        .bind(now_ms())
        .bind(build_number)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(secret))
    }

    /// The running job a job credential is for, with its host, while the host is not revoked.
    pub async fn job_of_secret(&self, secret: &str) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs j WHERE lease_sha256 = $1 AND state = 'running' \
             AND EXISTS (SELECT 1 FROM farm_hosts h WHERE h.name = j.host \
             AND h.revoked_at IS NULL)"
        ))
        .bind(secret::sha256(secret))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    /// The running jobs of a host.
    pub async fn running_jobs_of(&self, host: &str) -> Result<Vec<Job>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs WHERE host = $1 AND state = 'running'"
        ))
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_of).collect()
    }

    /// Ends a job; its credential stops working.
    pub async fn end_job(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE farm_jobs SET state = $1, error = $2, ended_at = $3, lease_sha256 = NULL \
             WHERE id = $4",
        )
        .bind(state)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels a job that has not ended; its credential stops working. False when it ended.
    pub async fn cancel_job(&self, id: &str, why: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE farm_jobs SET state = 'cancelled', error = $1, ended_at = $2, \
             lease_sha256 = NULL WHERE id = $3 AND state IN ('queued', 'running')",
        )
        .bind(why)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes back the credentials of running jobs the queue gave back (their host missed its
    /// heartbeats, or restarted): they wait for a host again. Returns how many.
    pub async fn release_requeued(&self) -> Result<u64, sqlx::Error> {
        // The table's name is one of two constants, never input.
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE farm_jobs SET state = 'queued', lease_sha256 = NULL WHERE state = 'running' \
             AND id IN (SELECT id FROM {} WHERE status = 'Pending')",
            self.queue_jobs
        )))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Appends events a job's host streamed, after those already kept.
    pub async fn append_events(
        &self,
        job: &str,
        attempt: i64,
        bodies: &[String],
    ) -> Result<(), sqlx::Error> {
        // Each insert numbers itself, so that the transaction writes from its first statement:
        // SQLite cannot turn a transaction that has read into one that writes while another
        // connection writes, and would refuse it rather than wait.
        let mut tx = self.pool.begin().await?;
        for body in bodies {
            sqlx::query(
                "INSERT INTO farm_job_events (job_id, seq, attempt, body) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM farm_job_events \
                 WHERE job_id = $1",
            )
            .bind(job)
            .bind(attempt)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// A job's events after `after`: (seq, JSON).
    pub async fn events_after(
        &self,
        job: &str,
        after: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, body FROM farm_job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq \
             LIMIT 1000",
        )
        .bind(job)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The job that records build `number` of `system`.
    pub async fn job_of_build(
        &self,
        system: &str,
        number: i64,
    ) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM farm_jobs WHERE system = $1 AND build_number = $2"
        ))
        .bind(system)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    // --- inputs

    /// Points the input `kind`/`name` at content `sha256` (stored before).
    pub async fn put_input(&self, input: &Input, by: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO farm_inputs (kind, name, sha256, size, added_by, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, name) DO UPDATE SET \
             sha256 = excluded.sha256, size = excluded.size, added_by = excluded.added_by, \
             added_at = excluded.added_at",
        )
        .bind(input.kind.as_str())
        .bind(&input.name)
        .bind(&input.sha256)
        .bind(i64::try_from(input.size).unwrap_or(i64::MAX))
        .bind(by)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The inputs the farm keeps, newest first.
    pub async fn inputs(&self) -> Result<Vec<InputRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, name, sha256, size, added_by, added_at FROM farm_inputs \
             ORDER BY added_at DESC, kind, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(InputRecord {
                    input: Input {
                        kind: row
                            .try_get::<&str, _>(0)?
                            .parse()
                            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                        name: row.try_get(1)?,
                        sha256: row.try_get(2)?,
                        size: u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
                    },
                    added_by: row.try_get(4)?,
                    added_at: row.try_get(5)?,
                })
            })
            .collect()
    }

    // --- audit

    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO farm_audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, detail FROM farm_audit ORDER BY at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| AuditEntry {
                at: row.get(0),
                actor: row.get(1),
                action: row.get(2),
                target: row.get(3),
                detail: row.get(4),
            })
            .collect())
    }
}
