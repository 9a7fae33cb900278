-- Schema version 1: conversations, their members, their messages.

CREATE TABLE conversations (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title        TEXT,
    owner        TEXT,
    -- A direct conversation's two users, sorted, joined by a newline: unique per pair.
    direct_key   TEXT    UNIQUE,
    -- The last message's sequence number; the next one is taken from here, in the
    -- transaction that stores it.
    last_seq     INTEGER NOT NULL DEFAULT 0,
    member_count INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL
);

CREATE TABLE members (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    user            TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    joined_seq      INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user)
) WITHOUT ROWID;

CREATE INDEX members_by_user ON members (user, conversation_id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    sender          TEXT,
    cid             TEXT,
    -- JSON text (binary = 0) or bytes (binary = 1).
    body            BLOB    NOT NULL,
    binary          INTEGER NOT NULL,
    ts_ms           INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
);

-- A sender's cid names one message, across conversations (system messages, with no
-- sender, share the empty sender).
CREATE UNIQUE INDEX messages_by_cid ON messages (coalesce(sender, ''), cid) WHERE cid IS NOT NULL;
