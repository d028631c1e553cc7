//! The job queue, on apalis's PostgreSQL storage: claims with `FOR UPDATE SKIP LOCKED`, worker
//! heartbeats, re-enqueueing of the jobs of dead workers, and results accepted only from the
//! worker holding the job. The server drives it for its build hosts, which never see the
//! database: each host is an apalis worker per queue it takes from, named `HOST@QUEUE`.
//!
//! A queue is one architecture: `build-amd64`, `build-arm64`. A job's payload is its id; what
//! it is lives in `farm_jobs`.

use std::time::Duration;

use apalis_core::backend::TaskResult;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::queries;
use apalis_postgres::{Config, PgPool, PostgresStorage};
use sqlx::Row;

/// How many times a job is handed out before it is given up (a host that dies with it counts).
pub const MAX_ATTEMPTS: usize = 5;

/// The queue of jobs for `arch`.
pub fn queue_of(arch: &str) -> String {
    format!("build-{arch}")
}

/// The apalis worker a host is on `queue`.
fn worker_name(host: &str, queue: &str) -> String {
    format!("{host}@{queue}")
}

/// The queue, with how host liveness is judged.
#[derive(Clone)]
pub struct Queue {
    pool: PgPool,
    /// How often hosts say they are alive.
    pub heartbeat: Duration,
    /// How long without a heartbeat before a host's jobs go back to the queue.
    pub dead_after: Duration,
}

impl Queue {
    /// Applies apalis's migrations; its history is kept in its own schema (`apalis`), apart
    /// from the build database's.
    pub async fn setup(
        pool: PgPool,
        heartbeat: Duration,
        dead_after: Duration,
    ) -> Result<Self, apalis_postgres::Error> {
        let mut migrator = PostgresStorage::<()>::migrations();
        migrator.create_schema("apalis");
        migrator.dangerous_set_table_name("apalis._sqlx_migrations");
        migrator
            .run(&pool)
            .await
            .map_err(|e| apalis_postgres::Error::Database(e.into()))?;
        Ok(Self {
            pool,
            heartbeat,
            dead_after,
        })
    }

    /// Queues job `id` (a ULID, as apalis's ids are) on `queue`. The idempotency key is unique in the queue too: a second
    /// push of the same build fails.
    pub async fn push(
        &self,
        id: &str,
        queue: &str,
        idempotency_key: &str,
    ) -> Result<(), apalis_postgres::Error> {
        let ulid = ulid::Ulid::from_string(id).map_err(|e| {
            apalis_postgres::Error::TaskIdError(apalis_core::task::task_id::TaskIdError::Decode(
                e.to_string(),
            ))
        })?;
        let task = TaskBuilder::new(id.as_bytes().to_vec())
            .task_id(TaskId::from_ulid(ulid))
            .max_attempts(MAX_ATTEMPTS)
            .idempotency_key(idempotency_key)
            .build();
        let mut conn = self.pool.acquire().await?;
        queries::push_tasks(&mut *conn, queue, vec![task]).await
    }

    /// Says `host` is alive on each of `queues`, registering it where it is new.
    pub async fn heartbeat(
        &self,
        host: &str,
        queues: &[String],
    ) -> Result<(), apalis_postgres::Error> {
        let mut conn = self.pool.acquire().await?;
        for queue in queues {
            let worker = WorkerContext::new(&worker_name(host, queue));
            match queries::keep_alive(&mut *conn, queue, &worker).await {
                Ok(()) => {}
                Err(apalis_postgres::Error::WorkerOutOfSync) => {
                    // The first time on this queue. (Not apalis's own registration: on a
                    // conflict it takes an advisory lock on whichever pooled connection ran it.)
                    sqlx::query(
                        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, \
                         last_seen) VALUES ($1, $2, 'autogentoo', '', NOW()) \
                         ON CONFLICT (id) DO UPDATE SET last_seen = NOW()",
                    )
                    .bind(worker.name())
                    .bind(queue)
                    .execute(&mut *conn)
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Claims the next job of `queue` for `host`: its id and attempt (0 for the first).
    pub async fn claim(
        &self,
        host: &str,
        queue: &str,
    ) -> Result<Option<(String, i64)>, apalis_postgres::Error> {
        let name = worker_name(host, queue);
        let worker = WorkerContext::new(&name);
        let config = Config::default().queue(queue).batch_size(1);
        let mut conn = self.pool.acquire().await?;
        let tasks = queries::fetch_next(&mut *conn, &config, &worker).await?;
        let Some(task) = tasks.into_iter().next() else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&task.args).into_owned();
        queries::lock_tasks(&mut *conn, std::slice::from_ref(&id), &name).await?;
        Ok(Some((id, task.attempt() as i64)))
    }

    /// Whether `host` still holds job `id` on `queue`: its lease was not lost to a missed
    /// heartbeat.
    pub async fn holds(&self, host: &str, queue: &str, id: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "SELECT 1 FROM apalis.jobs WHERE id = $1 AND lock_by = $2 \
             AND status IN ('Queued', 'Running')",
        )
        .bind(id)
        .bind(worker_name(host, queue))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
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
    ) -> Result<bool, apalis_postgres::Error> {
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
        let mut conn = self.pool.acquire().await?;
        let changed =
            queries::handle_results(&mut *conn, &[&result], &worker_name(host, queue)).await?;
        Ok(changed == 1)
    }

    /// Gives back the jobs `host` held when it restarted, so that they run again.
    pub async fn abandon(
        &self,
        host: &str,
        queue: &str,
        ids: &[String],
    ) -> Result<u64, apalis_postgres::Error> {
        let mut conn = self.pool.acquire().await?;
        queries::reenqueue_abandoned(&mut *conn, queue, &worker_name(host, queue), ids).await
    }

    /// Puts the jobs of hosts not heard from for [`Queue::dead_after`] back in their queues;
    /// returns how many. Their hosts' credentials for them stop counting (see
    /// [`Queue::holds`]).
    pub async fn requeue_orphans(&self) -> Result<u64, apalis_postgres::Error> {
        let queues: Vec<String> = sqlx::query("SELECT DISTINCT worker_type FROM apalis.workers")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut conn = self.pool.acquire().await?;
        let mut total = 0;
        for queue in queues {
            total +=
                queries::reenqueue_orphaned(&mut *conn, &queue, self.dead_after.as_secs().max(1))
                    .await?;
        }
        Ok(total)
    }

    /// Jobs waiting in `queue`, and how long the oldest has waited.
    pub async fn waiting(&self, queue: &str) -> Result<(i64, Option<Duration>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*), EXTRACT(EPOCH FROM (NOW() - MIN(run_at)))::float8 FROM apalis.jobs \
             WHERE job_type = $1 AND status = 'Pending'",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        let waited: Option<f64> = row.get(1);
        Ok((
            row.get(0),
            waited.map(|s| Duration::from_secs_f64(s.max(0.0))),
        ))
    }
}
