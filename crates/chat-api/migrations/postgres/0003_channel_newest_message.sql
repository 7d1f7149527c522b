-- The id of the newest message a channel ever had, deleted ones included: a high-water mark that
-- only rises. A post whose id does not raise it was made out of order (another instance's clock,
-- or a slower concurrent post), so it may land inside a history page that is already cached;
-- chat-api then drops the channel's cached history, which it keeps across in-order posts
-- otherwise. NULL: no message yet.
ALTER TABLE channels ADD COLUMN newest_message_id TEXT COLLATE "C";
UPDATE channels SET newest_message_id =
    (SELECT max(messages.id) FROM messages WHERE messages.channel_id = channels.id);
