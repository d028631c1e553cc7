-- What builds start from, kept by the farm server by content (SHA-256, in its artifact store):
-- stages and kernel sources as tarballs, ebuild repository snapshots as SquashFS images. Each
-- is a name the site config uses; adding a name again points it at new content. A job carries
-- the inputs it was submitted with, and its host fetches those it lacks.
CREATE TABLE farm_inputs (
    -- stage, kernel or repo
    kind     TEXT   NOT NULL,
    name     TEXT   NOT NULL,
    sha256   TEXT   NOT NULL,
    size     BIGINT NOT NULL,
    added_by TEXT   NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);

-- The inputs of a job, as a JSON array of {kind, name, sha256, size}.
ALTER TABLE farm_jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';
