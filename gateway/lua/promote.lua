-- Move due retries back to their channel streams. ZREM decides who moves a job, so with
-- many workers running this at once each job is moved exactly once.
-- KEYS[1] retries sorted set; ARGV[1] now (ms), ARGV[2] max jobs
-- Members are "<stream key>\n<encoded job>". Returns the number moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local nl = string.find(member, '\n', 1, true)
    redis.call('XADD', string.sub(member, 1, nl - 1), '*', 'j', string.sub(member, nl + 1))
    moved = moved + 1
  end
end
return moved
