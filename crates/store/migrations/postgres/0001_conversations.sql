-- Schema version 1: conversations, their members, their messages (as SQLite's version 1).
-- User ids sort bytewise (COLLATE "C"), as in SQLite, so member pages are the same.

CREATE TABLE conversations (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT   NOT NULL CHECK (kind IN ('direct', 'group')),
    title        TEXT,
    owner        TEXT COLLATE "C",
    -- A direct conversation's two users, sorted, joined by a newline: unique per pair.
    direct_key   TEXT   UNIQUE,
    -- The last message's sequence number; the next one is taken from here, in the
    -- transaction that stores it.
    last_seq     BIGINT NOT NULL DEFAULT 0,
    member_count BIGINT NOT NULL DEFAULT 0,
    created_ms   BIGINT NOT NULL
);

CREATE TABLE members (
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    uid             TEXT COLLATE "C" NOT NULL,
    role            TEXT   NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    joined_seq      BIGINT NOT NULL,
    read_seq        BIGINT NOT NULL,
    delivered_seq   BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, uid)
);

CREATE INDEX members_by_user ON members (uid, conversation_id);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT  NOT NULL REFERENCES conversations (id),
    seq             BIGINT  NOT NULL,
    sender          TEXT,
    cid             TEXT,
    -- JSON text (is_binary false) or bytes.
    body            BYTEA   NOT NULL,
    is_binary       BOOLEAN NOT NULL,
    ts_ms           BIGINT  NOT NULL,
    UNIQUE (conversation_id, seq)
);

-- A sender's cid names one message, across conversations (system messages, with no
-- sender, share the empty sender).
CREATE UNIQUE INDEX messages_by_cid ON messages ((coalesce(sender, '')), cid) WHERE cid IS NOT NULL;
