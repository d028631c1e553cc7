//! The job queue, on apalis's storage: PostgreSQL for a farm (claims with `FOR UPDATE SKIP
//! LOCKED`), SQLite on one machine. Either way: worker heartbeats, re-enqueueing of the jobs of
//! dead workers, and results accepted only from the worker holding the job. The server drives
//! it for its build hosts, which never see the database: each host is an apalis worker per
//! queue it takes from, named `HOST@QUEUE`.
//!
//! A queue is one architecture (`build-amd64`, `build-arm64`), or one architecture on one
//! storage backend for the jobs pinned to it (`build-amd64-zfs`). A job's payload is its id;
//! what it is lives in `farm_jobs`.

use std::time::Duration;

use apalis_core::backend::{TaskResult, WorkerFilter};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::{PgPool, PostgresStorage};
use apalis_sqlite::{SqlitePool, SqliteStorage};
use sqlx::Row;

/// How many times a job is handed out before it is given up (a host that dies with it counts).
pub const MAX_ATTEMPTS: usize = 5;

/// The queue of jobs for `arch`, on `backend` when they are pinned to one.
pub fn queue_of(arch: &str, backend: Option<&str>) -> String {
    match backend {
        None => format!("build-{arch}"),
        Some(backend) => format!("build-{arch}-{backend}"),
    }
}

/// The queue `job` is in.
pub fn queue_of_job(job: &crate::api_types::Job) -> String {
    queue_of(&job.arch, job.backend.as_deref())
}

/// apalis's table of jobs in the database at `location`.
pub fn jobs_table(location: &autogentoo_db::Location) -> &'static str {
    match location {
        autogentoo_db::Location::Postgres { .. } => "apalis.jobs",
        autogentoo_db::Location::Sqlite(_) => "Jobs",
    }
}

/// The apalis worker a host is on `queue`.
fn worker_name(host: &str, queue: &str) -> String {
    format!("{host}@{queue}")
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Postgres(#[from] apalis_postgres::Error),
    #[error(transparent)]
    Sqlite(#[from] apalis_sqlite::Error),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("`{0}` is not a job id (a ULID)")]
    BadId(String),
}

/// Where the queue lives.
#[derive(Clone)]
enum Engine {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The queue, with how host liveness is judged.
#[derive(Clone)]
pub struct Queue {
    engine: Engine,
    /// How often hosts say they are alive.
    pub heartbeat: Duration,
    /// How long without a heartbeat before a host's jobs go back to the queue.
    pub dead_after: Duration,
}

impl Queue {
    /// Applies apalis's PostgreSQL migrations; their history is kept in its own schema
    /// (`apalis`), apart from the build database's.
    pub async fn postgres(
        pool: PgPool,
        heartbeat: Duration,
        dead_after: Duration,
    ) -> Result<Self, QueueError> {
        let mut migrator = PostgresStorage::<()>::migrations();
        migrator.create_schema("apalis");
        migrator.dangerous_set_table_name("apalis._sqlx_migrations");
        migrator.run(&pool).await?;
        Ok(Self {
            engine: Engine::Postgres(pool),
            heartbeat,
            dead_after,
        })
    }

    /// Applies apalis's SQLite migrations (its tables `Jobs` and `Workers` beside the build
    /// database's; their history in `apalis_migrations`, apart from the build database's).
    pub async fn sqlite(
        pool: SqlitePool,
        heartbeat: Duration,
        dead_after: Duration,
    ) -> Result<Self, QueueError> {
        let mut migrator = SqliteStorage::<()>::migrations();
        migrator.dangerous_set_table_name("apalis_migrations");
        migrator.run(&pool).await?;
        Ok(Self {
            engine: Engine::Sqlite(pool),
            heartbeat,
            dead_after,
        })
    }

    /// Queues job `id` (a ULID, as apalis's ids are) on `queue`. The idempotency key is unique
    /// in the queue too: a second push of the same build fails.
    pub async fn push(
        &self,
        id: &str,
        queue: &str,
        idempotency_key: &str,
    ) -> Result<(), QueueError> {
        let ulid = ulid::Ulid::from_string(id).map_err(|_| QueueError::BadId(id.to_owned()))?;
        let task: Task<Vec<u8>> = TaskBuilder::new(id.as_bytes().to_vec())
            .task_id(TaskId::from_ulid(ulid))
            .max_attempts(MAX_ATTEMPTS)
            .idempotency_key(idempotency_key)
            .build();
        match &self.engine {
            Engine::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                apalis_postgres::queries::push_tasks(&mut *conn, queue, vec![task]).await?;
            }
            Engine::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                apalis_sqlite::queries::push_tasks(&mut *conn, queue, &[task]).await?;
            }
        }
        Ok(())
    }

    /// Says `host` is alive on each of `queues`, registering it where it is new. (Not
    /// apalis's own registration, which refuses a worker seen lately, as a host that restarts
    /// is; on PostgreSQL it also takes an advisory lock on whichever pooled connection ran it.)
    pub async fn heartbeat(&self, host: &str, queues: &[String]) -> Result<(), QueueError> {
        for queue in queues {
            let worker = WorkerContext::new(&worker_name(host, queue));
            match &self.engine {
                Engine::Postgres(pool) => {
                    let mut conn = pool.acquire().await?;
                    match apalis_postgres::queries::keep_alive(&mut *conn, queue, &worker).await {
                        Ok(()) => {}
                        Err(apalis_postgres::Error::WorkerOutOfSync) => {
                            sqlx::query(
                                "INSERT INTO apalis.workers (id, worker_type, storage_name, \
                                 layers, last_seen) VALUES ($1, $2, 'autogentoo', '', NOW()) \
                                 ON CONFLICT (id) DO UPDATE SET last_seen = NOW()",
                            )
                            .bind(worker.name())
                            .bind(queue)
                            .execute(&mut *conn)
                            .await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Engine::Sqlite(pool) => {
                    sqlx::query(
                        "INSERT INTO Workers (id, worker_type, storage_name, layers, last_seen, \
                         started_at) VALUES (?1, ?2, 'autogentoo', '', strftime('%s', 'now'), \
                         strftime('%s', 'now')) \
                         ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                    )
                    .bind(worker.name())
                    .bind(queue)
                    .execute(pool)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Claims the next job of `queue` for `host`: its id and attempt (0 for the first).
    pub async fn claim(
        &self,
        host: &str,
        queue: &str,
    ) -> Result<Option<(String, i64)>, QueueError> {
        let name = worker_name(host, queue);
        let worker = WorkerContext::new(&name);
        let task = match &self.engine {
            Engine::Postgres(pool) => {
                let config = apalis_postgres::Config::default()
                    .queue(queue)
                    .batch_size(1);
                let mut conn = pool.acquire().await?;
                let tasks =
                    apalis_postgres::queries::fetch_next(&mut *conn, &config, &worker).await?;
                let Some(task) = tasks.into_iter().next() else {
                    return Ok(None);
                };
                let id = String::from_utf8_lossy(&task.args).into_owned();
                apalis_postgres::queries::lock_tasks(&mut *conn, std::slice::from_ref(&id), &name)
                    .await?;
                (id, task.attempt())
            }
            Engine::Sqlite(pool) => {
                let config = apalis_sqlite::Config::default().queue(queue).batch_size(1);
                let mut conn = pool.acquire().await?;
                let tasks =
                    apalis_sqlite::queries::fetch_next(&mut *conn, &config, &worker).await?;
                let Some(task) = tasks.into_iter().next() else {
                    return Ok(None);
                };
                let id = String::from_utf8_lossy(&task.args).into_owned();
                apalis_sqlite::queries::lock_tasks(&mut *conn, std::slice::from_ref(&id), &name)
                    .await?;
                (id, task.attempt())
            }
        };
        Ok(Some((task.0, task.1 as i64)))
    }

    /// Whether `host` still holds job `id` on `queue`: its lease was not lost to a missed
    /// heartbeat.
    pub async fn holds(&self, host: &str, queue: &str, id: &str) -> Result<bool, QueueError> {
        let worker = worker_name(host, queue);
        let held = match &self.engine {
            Engine::Postgres(pool) => sqlx::query(
                "SELECT 1 FROM apalis.jobs WHERE id = $1 AND lock_by = $2 \
                 AND status IN ('Queued', 'Running')",
            )
            .bind(id)
            .bind(worker)
            .fetch_optional(pool)
            .await?
            .is_some(),
            Engine::Sqlite(pool) => sqlx::query(
                "SELECT 1 FROM Jobs WHERE id = ?1 AND lock_by = ?2 \
                 AND status IN ('Queued', 'Running')",
            )
            .bind(id)
            .bind(worker)
            .fetch_optional(pool)
            .await?
            .is_some(),
        };
        Ok(held)
    }

    /// Marks job `id` done by `host` (whatever the build's outcome: a failed build is not
    /// retried). False when `host` no longer holds it: the result is refused.
    pub async fn complete(
        &self,
        host: &str,
        queue: &str,
        id: &str,
        attempt: i64,
        ok: bool,
    ) -> Result<bool, QueueError> {
        let result = TaskResult {
            task_id: TaskId::from_string(id.to_owned()),
            attempt: attempt as usize,
            status: Status::Done,
            result: if ok {
                Ok(serde_json::json!("succeeded"))
            } else {
                Err("the build failed".to_owned())
            },
        };
        let worker = worker_name(host, queue);
        let changed = match &self.engine {
            Engine::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                apalis_postgres::queries::handle_results(&mut *conn, &[&result], &worker).await?
            }
            Engine::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                apalis_sqlite::queries::ack_tasks(&mut *conn, &[&result], &worker).await?
            }
        };
        Ok(changed == 1)
    }

    /// Gives back the jobs `host` held when it restarted, so that they run again.
    pub async fn abandon(
        &self,
        host: &str,
        queue: &str,
        ids: &[String],
    ) -> Result<u64, QueueError> {
        let worker = worker_name(host, queue);
        let given = match &self.engine {
            Engine::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                apalis_postgres::queries::reenqueue_abandoned(&mut *conn, queue, &worker, ids)
                    .await?
            }
            // apalis-sqlite's own query gives back only jobs fetched and not yet started; a
            // host gives back the one it runs too, as apalis-postgres's query does.
            Engine::Sqlite(pool) => {
                let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
                sqlx::query(
                    "UPDATE Jobs SET status = 'Pending', done_at = NULL, lock_by = NULL, \
                     lock_at = NULL, attempts = attempts + 1, \
                     last_result = '{\"Err\": \"Re-enqueued due to worker shutdown\"}' \
                     WHERE lock_by = ?1 AND status IN ('Queued', 'Running') \
                     AND id IN (SELECT value FROM json_each(?2))",
                )
                .bind(&worker)
                .bind(ids)
                .execute(pool)
                .await?
                .rows_affected()
            }
        };
        Ok(given)
    }

    /// Takes job `id` out of the queue, waiting or running: no host gets it after this, and
    /// a result for it is refused. False when it had ended already.
    pub async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        let changed = match &self.engine {
            Engine::Postgres(pool) => sqlx::query(
                "UPDATE apalis.jobs SET status = 'Killed', done_at = NOW(), lock_by = NULL, \
                 last_result = '{\"Err\": \"cancelled\"}' \
                 WHERE id = $1 AND status IN ('Pending', 'Queued', 'Running')",
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected(),
            Engine::Sqlite(pool) => sqlx::query(
                "UPDATE Jobs SET status = 'Killed', done_at = strftime('%s', 'now'), \
                 lock_by = NULL, last_result = '{\"Err\": \"cancelled\"}' \
                 WHERE id = ?1 AND status IN ('Pending', 'Queued', 'Running')",
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(changed == 1)
    }

    /// Puts the jobs of hosts not heard from for [`Queue::dead_after`] back in their queues;
    /// returns how many. Their hosts' credentials for them stop counting (see
    /// [`Queue::holds`]).
    pub async fn requeue_orphans(&self) -> Result<u64, QueueError> {
        let dead_for = self.dead_after.as_secs().max(1);
        let mut total = 0;
        match &self.engine {
            Engine::Postgres(pool) => {
                let queues: Vec<String> =
                    sqlx::query("SELECT DISTINCT worker_type FROM apalis.workers")
                        .fetch_all(pool)
                        .await?
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                let mut conn = pool.acquire().await?;
                for queue in queues {
                    total +=
                        apalis_postgres::queries::reenqueue_orphaned(&mut *conn, &queue, dead_for)
                            .await?;
                }
            }
            Engine::Sqlite(pool) => {
                let queues: Vec<String> = sqlx::query("SELECT DISTINCT worker_type FROM Workers")
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                let mut conn = pool.acquire().await?;
                for queue in queues {
                    total += apalis_sqlite::queries::reenqueue_orphaned(
                        &mut *conn,
                        dead_for as i64,
                        &queue,
                        &WorkerFilter::None,
                    )
                    .await?;
                }
            }
        }
        Ok(total)
    }

    /// Jobs waiting in `queue`, and how long the oldest has waited.
    pub async fn waiting(&self, queue: &str) -> Result<(i64, Option<Duration>), QueueError> {
        let (count, waited): (i64, Option<f64>) = match &self.engine {
            Engine::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT COUNT(*), EXTRACT(EPOCH FROM (NOW() - MIN(run_at)))::float8 \
                     FROM apalis.jobs WHERE job_type = $1 AND status = 'Pending'",
                )
                .bind(queue)
                .fetch_one(pool)
                .await?;
                (row.get(0), row.get(1))
            }
            Engine::Sqlite(pool) => {
                let row = sqlx::query(
                    "SELECT COUNT(*), CAST(strftime('%s', 'now') AS INTEGER) - MIN(run_at) \
                     FROM Jobs WHERE job_type = ?1 AND status = 'Pending'",
                )
                .bind(queue)
                .fetch_one(pool)
                .await?;
                (row.get(0), row.get::<Option<i64>, _>(1).map(|s| s as f64))
            }
        };
        Ok((count, waited.map(|s| Duration::from_secs_f64(s.max(0.0)))))
    }
}
