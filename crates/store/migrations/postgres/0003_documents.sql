-- Schema version 3: Yjs documents (as SQLite's version 3).

CREATE TABLE documents (
    name         TEXT   PRIMARY KEY,
    snapshot     BYTEA  NOT NULL,
    snapshot_seq BIGINT NOT NULL DEFAULT 0,
    last_seq     BIGINT NOT NULL DEFAULT 0,
    bytes        BIGINT NOT NULL DEFAULT 0,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);

CREATE TABLE document_updates (
    name TEXT   NOT NULL,
    seq  BIGINT NOT NULL,
    data BYTEA  NOT NULL,
    PRIMARY KEY (name, seq)
);
