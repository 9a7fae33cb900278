-- Schema version 2: when each user was last seen, kept across restarts.

CREATE TABLE presence (
    user_id      TEXT    PRIMARY KEY,
    -- Milliseconds since the epoch; only ever moved forward.
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
