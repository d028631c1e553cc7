-- Published builds: `published/SYSTEM` (tag '') or `published/SYSTEM@TAG` points at one build's
-- results. A published build is never purged.
CREATE TABLE published (
    system       TEXT   NOT NULL,
    tag          TEXT   NOT NULL,
    number       BIGINT NOT NULL,
    published_at BIGINT NOT NULL,
    published_by TEXT   NOT NULL,
    PRIMARY KEY (system, tag),
    FOREIGN KEY (system, number) REFERENCES builds (system, number)
);
