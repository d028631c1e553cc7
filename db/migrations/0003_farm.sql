-- The build farm (`autogentoo serve`): who may use the API, the build hosts, the jobs and what
-- they reported, and an audit log. Every secret is stored as its SHA-256 only: the secrets are
-- 256 random bits, so a fast hash is as good as a slow one and lets a lookup be one index probe.
-- The queue itself (leases, heartbeats, redelivery) is apalis's, in PostgreSQL's `apalis` schema.

-- API tokens of people: viewer (read), operator (submit, keep, publish), admin (keys, hosts,
-- tokens).
CREATE TABLE farm_tokens (
    name          TEXT   NOT NULL PRIMARY KEY,
    role          TEXT   NOT NULL,
    secret_sha256 TEXT   NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    revoked_at    BIGINT
);

-- One-time enrollment keys: usable once, before they expire.
CREATE TABLE farm_enrollment_keys (
    id            TEXT   NOT NULL PRIMARY KEY,
    secret_sha256 TEXT   NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    used_by       TEXT
);

-- Build hosts, each with its own credential, revocable. `capabilities` is what the host said it
-- can build (JSON: arches, backends, slots) when it last asked for work.
CREATE TABLE farm_hosts (
    name          TEXT   NOT NULL PRIMARY KEY,
    secret_sha256 TEXT   NOT NULL UNIQUE,
    key_id        TEXT   NOT NULL,
    enrolled_at   BIGINT NOT NULL,
    revoked_at    BIGINT,
    last_seen     BIGINT,
    capabilities  TEXT   NOT NULL DEFAULT '{}'
);

-- Jobs: one build of a system, once per idempotency key (system, site config, snapshot). `id`
-- is the queue's task id. A lease gives the job a credential of its own (its hash here) that
-- is good for that attempt only; `build_number` is its record in `builds`.
CREATE TABLE farm_jobs (
    id              TEXT   NOT NULL PRIMARY KEY,
    system          TEXT   NOT NULL,
    arch            TEXT   NOT NULL,
    backend         TEXT,
    config_hash     TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL UNIQUE,
    submitted_by    TEXT   NOT NULL,
    submitted_at    BIGINT NOT NULL,
    -- queued, running, succeeded, failed
    state           TEXT   NOT NULL,
    host            TEXT,
    attempt         BIGINT NOT NULL DEFAULT 0,
    lease_sha256    TEXT,
    leased_at       BIGINT,
    build_number    BIGINT,
    error           TEXT,
    ended_at        BIGINT
);
CREATE INDEX farm_jobs_by_state ON farm_jobs (state, submitted_at);

-- What a job's host streamed: the pipeline's events, one JSON object each, in order.
CREATE TABLE farm_job_events (
    job_id  TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    body    TEXT   NOT NULL,
    PRIMARY KEY (job_id, seq),
    FOREIGN KEY (job_id) REFERENCES farm_jobs (id) ON DELETE CASCADE
);

-- Every change made through the API: who, when, what.
CREATE TABLE farm_audit (
    at     BIGINT NOT NULL,
    actor  TEXT   NOT NULL,
    action TEXT   NOT NULL,
    target TEXT   NOT NULL,
    detail TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX farm_audit_by_time ON farm_audit (at);
