-- Disable an endpoint once, and tell staff: only the caller that sets disabled_at
-- appends the endpoint.disabled event, however many workers decide at the same time.
-- KEYS[1] endpoint hash, KEYS[2] events stream, KEYS[3] the event's dedupe key
-- ARGV[1] now (epoch s), ARGV[2] reason, ARGV[3] encoded event, ARGV[4] how long the dedupe key is kept (s)
-- Returns 1 if this call disabled the endpoint.
if redis.call('HSETNX', KEYS[1], 'disabled_at', ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'disabled_reason', ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
redis.call('SET', KEYS[3], id, 'EX', ARGV[4])
return 1
