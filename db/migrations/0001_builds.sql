-- The build database, version 1. Written in the SQL that SQLite and PostgreSQL share: times are
-- milliseconds since the epoch (BIGINT), flags are 0 or 1 (BIGINT), compressed logs are BYTEA
-- (stored as BLOBs by SQLite).

-- One row per `build SYSTEM` that ran (not --pretend); numbered per system from 1.
CREATE TABLE builds (
    system      TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    -- Where and by whom: the host's name, the user and the program that started it.
    host        TEXT   NOT NULL,
    started_by  TEXT   NOT NULL,
    -- The process, to tell a build that is running from one whose process died: its PID, its
    -- start time (clock ticks after boot) and the host's boot ID.
    pid         BIGINT NOT NULL,
    pid_start   BIGINT NOT NULL,
    boot_id     TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    -- running, succeeded, failed or interrupted.
    outcome     TEXT   NOT NULL,
    error       TEXT,
    -- The inputs: the site config's SHA-256, the stage (name and creation), the repository
    -- snapshot, the packages asked for, and a SHA-256 over all of them.
    config_hash TEXT   NOT NULL,
    stage       TEXT   NOT NULL,
    repo        TEXT   NOT NULL,
    packages    TEXT   NOT NULL,
    inputs      TEXT   NOT NULL,
    -- What the image holds (`CATEGORY/PF:SLOT USE="…"` lines), once the build succeeded.
    contents    TEXT,
    -- Where its results are kept (WORKDIR/out/SYSTEM/N), and whether purges must spare it.
    out_dir     TEXT   NOT NULL,
    kept        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (system, number)
);
CREATE INDEX builds_by_start ON builds (started_at);
CREATE INDEX builds_running ON builds (outcome, host);

-- The steps of a build, in order.
CREATE TABLE build_steps (
    system      TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    step        TEXT   NOT NULL,
    -- ran, skipped or failed; why it ran or was skipped.
    outcome     TEXT   NOT NULL,
    why         TEXT   NOT NULL,
    duration_ms BIGINT,
    summary     TEXT,
    error       TEXT,
    PRIMARY KEY (system, number, step),
    FOREIGN KEY (system, number) REFERENCES builds (system, number) ON DELETE CASCADE
);

-- What the commands of a step printed, zstd-compressed.
CREATE TABLE build_logs (
    system      TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    step        TEXT   NOT NULL,
    lines       BIGINT NOT NULL,
    compressed  BYTEA  NOT NULL,
    PRIMARY KEY (system, number, step),
    FOREIGN KEY (system, number) REFERENCES builds (system, number) ON DELETE CASCADE
);

-- The files of a build's results, kept in its out_dir.
CREATE TABLE build_artifacts (
    system      TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    name        TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    step        TEXT   NOT NULL,
    -- 1 when this build made it, 0 when a skipped step kept an earlier build's.
    made        BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT   NOT NULL,
    PRIMARY KEY (system, number, name),
    FOREIGN KEY (system, number) REFERENCES builds (system, number) ON DELETE CASCADE
);
