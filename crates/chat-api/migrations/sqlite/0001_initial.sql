-- Initial schema (SQLite). Ids are ULID strings: they sort by creation time under SQLite's
-- default BINARY collation, which keyset pagination relies on. Times are Unix milliseconds.

CREATE TABLE users (
    id          TEXT    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL UNIQUE,
    -- SHA-256 of the token's secret part; the token itself is never stored.
    token_hash  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE channels (
    id          TEXT    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('public', 'private')),
    owner_id    TEXT    NOT NULL REFERENCES users (id),
    created_at  INTEGER NOT NULL
);

CREATE TABLE memberships (
    channel_id    TEXT    NOT NULL REFERENCES channels (id),
    user_id       TEXT    NOT NULL REFERENCES users (id),
    role          TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at     INTEGER NOT NULL,
    last_read_id  TEXT,
    PRIMARY KEY (channel_id, user_id)
);
-- "My channels": memberships by user.
CREATE INDEX memberships_by_user ON memberships (user_id, channel_id);

CREATE TABLE messages (
    id          TEXT    PRIMARY KEY NOT NULL,
    channel_id  TEXT    NOT NULL REFERENCES channels (id),
    author_id   TEXT    NOT NULL REFERENCES users (id),
    content     TEXT    NOT NULL,
    nonce       TEXT,
    created_at  INTEGER NOT NULL,
    edited_at   INTEGER
);
-- Message pages: keyset pagination on (channel_id, id).
CREATE INDEX messages_by_channel ON messages (channel_id, id);
-- A retried post with the same nonce finds the message it already created.
CREATE UNIQUE INDEX messages_by_nonce ON messages (channel_id, author_id, nonce) WHERE nonce IS NOT NULL;

CREATE TABLE reactions (
    message_id  TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    emoji       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
