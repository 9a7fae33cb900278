-- Schema version 2: when each user was last seen (as SQLite's version 2).

CREATE TABLE presence (
    user_id      TEXT   PRIMARY KEY,
    -- Milliseconds since the epoch; only ever moved forward.
    last_seen_ms BIGINT NOT NULL
);
