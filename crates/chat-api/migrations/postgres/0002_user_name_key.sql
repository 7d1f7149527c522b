-- User names are unique by what they look like, not only by their spelling: `name_key` is the
-- confusable skeleton of the lower-cased name (chat-api's `validate::user_name_key`), so `Ann`,
-- `ann` and `аnn` with a Cyrillic `а` cannot all register. NULL for users registered before this
-- column existed; chat-api fills those in when it starts (it computes the key, SQL cannot).
ALTER TABLE users ADD COLUMN name_key TEXT;
CREATE UNIQUE INDEX users_by_name_key ON users (name_key);
