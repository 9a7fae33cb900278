-- Schema version 3: Yjs documents, as a compacted snapshot and the updates after it.

CREATE TABLE documents (
    name         TEXT    PRIMARY KEY,
    -- Every update up to `snapshot_seq`, merged into one Yjs v1 update (empty when none).
    snapshot     BLOB    NOT NULL,
    snapshot_seq INTEGER NOT NULL DEFAULT 0,
    -- The last update's sequence number; the next one is taken from here, in the
    -- transaction that stores it.
    last_seq     INTEGER NOT NULL DEFAULT 0,
    -- Bytes stored for the document: the snapshot and the updates after it.
    bytes        INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);

CREATE TABLE document_updates (
    name TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    data BLOB    NOT NULL,
    PRIMARY KEY (name, seq)
);
