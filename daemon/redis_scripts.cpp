// The Redis backend's scripts (see redis_scripts.hpp and docs/REDIS.md).
// Every script shares the prelude: the circuit as a Lua table, time from
// Redis, settling of expired pins and leases, the reference's transition
// rules with a new generation, events published, and one result shape.
#include "daemon/redis_scripts.hpp"

namespace cbd {

namespace {

// KEYS: 1 circuit hash, 2 probe permits (zset: permit -> lease end),
// 3 generation counter, 4 the key's policy override (hash), 5 the events
// channel, 6 the key index (zset, all scores 0, for listing).
// ARGV: 1 the key, 2..6 the daemon's policy for the key before any key
// override (failureThreshold, resetTimeoutMs, halfOpenMax, successThreshold,
// probeLeaseMs), 7.. the operation's own.
constexpr std::string_view kPrelude = R"lua(
local C, PROBES, GEN, POL, EVENTS, INDEX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local key = ARGV[1]
local P = string.sub(INDEX, 1, #INDEX - #'index')
local DEADLINES = P .. 'deadlines'
local POLICIES = P .. 'policies'
local max_circuits = tonumber(ARGV[#ARGV])
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local c = nil
local changed = false
local tr = nil

local function load(create)
  local h = redis.call('HMGET', C, 'state', 'fc', 'sc', 'lft', 'lsc', 'gen', 'ps', 'pu', 'pr', 'puid', 'ppid')
  if not h[1] then
    if not create then return false end
    if redis.call('ZCARD', INDEX) >= max_circuits then
      error({err = 'TOO_MANY_CIRCUITS the shared store holds its maximum number of circuits'})
    end
    c = {state = 'closed', fc = 0, sc = 0, lft = 0, lsc = now, gen = redis.call('INCR', GEN)}
    redis.call('ZADD', INDEX, 0, key)
    changed = true
    return true
  end
  c = {state = h[1], fc = tonumber(h[2]), sc = tonumber(h[3]), lft = tonumber(h[4]),
       lsc = tonumber(h[5]), gen = tonumber(h[6])}
  if h[7] then
    c.ps = h[7]; c.pu = tonumber(h[8]); c.pr = h[9]; c.puid = tonumber(h[10]); c.ppid = tonumber(h[11])
    c.was_pinned = true
  end
  return true
end

local function publish(from, to, cause)
  redis.call('PUBLISH', EVENTS, cjson.encode({'transition', key, from, to, now, cause, c.gen,
    c.state, c.fc, c.sc, c.lft, c.lsc, c.ps or '', c.pu or 0, c.pr or '', c.puid or 0, c.ppid or 0}))
end

local function transition(to, cause)
  local from = c.state
  c.state = to
  c.lsc = now
  if to == 'closed' then c.fc = 0; c.sc = 0 elseif to == 'half-open' then c.sc = 0 end
  c.gen = redis.call('INCR', GEN)
  redis.call('DEL', PROBES)
  changed = true
  tr = {from, to, cause}
  publish(from, to, cause)
end

local function lift_pin(cause)
  c.ps = nil; c.pu = nil; c.pr = nil; c.puid = nil; c.ppid = nil
  c.gen = redis.call('INCR', GEN)
  changed = true
  tr = {c.state, c.state, cause}
  publish(c.state, c.state, cause)
end

-- What time alone decides: an expired pin lifts; an expired probe lease
-- counts as a failed probe and re-opens the circuit.
local function settle()
  if c.ps and c.pu ~= 0 and now >= c.pu then lift_pin('force-expired') end
  if redis.call('ZCOUNT', PROBES, '-inf', now) > 0 then
    c.fc = c.fc + 1
    c.lft = now
    transition('open', 'lease-expired')
  end
end

local function policy()
  local o = redis.call('HMGET', POL, 'failureThreshold', 'resetTimeoutMs', 'halfOpenMax',
                       'successThreshold', 'probeLeaseMs')
  local p = {}
  for i = 1, 5 do p[i] = tonumber(o[i] or ARGV[i + 1]) end
  return p
end

local function save()
  if not changed then return end
  redis.call('HSET', C, 'state', c.state, 'fc', c.fc, 'sc', c.sc, 'lft', c.lft, 'lsc', c.lsc, 'gen', c.gen)
  if c.ps then
    redis.call('HSET', C, 'ps', c.ps, 'pu', c.pu, 'pr', c.pr, 'puid', c.puid, 'ppid', c.ppid)
  elseif c.was_pinned then
    redis.call('HDEL', C, 'ps', 'pu', 'pr', 'puid', 'ppid')
  end
end

local function result(status, x1, x2, x3)
  save()
  return {status, c.state, c.fc, c.sc, c.lft, c.lsc, c.gen, c.ps or '', c.pu or 0, c.pr or '',
          c.puid or 0, c.ppid or 0, tr and tr[1] or '', tr and tr[2] or '', tr and tr[3] or '',
          x1 or 0, x2 or '', x3 or 0}
end
)lua";

constexpr std::string_view kGet = R"lua(
load(true); settle()
return result('ok')
)lua";

constexpr std::string_view kSuccess = R"lua(
load(true); settle()
c.sc = c.sc + 1; changed = true
return result('ok')
)lua";

constexpr std::string_view kFailure = R"lua(
load(true); settle()
c.fc = c.fc + 1; c.lft = now; changed = true
return result('ok')
)lua";

// ARGV 7: to, 8: expected state or '', 9: expected generation or ''.
constexpr std::string_view kTransition = R"lua(
load(true); settle()
if (ARGV[8] ~= '' and ARGV[8] ~= c.state) or (ARGV[9] ~= '' and tonumber(ARGV[9]) ~= c.gen) then
  return result('conflict')
end
if c.ps then return result('forced') end
transition(ARGV[7], 'manual')
return result('ok')
)lua";

constexpr std::string_view kReset = R"lua(
if redis.call('EXISTS', C) == 0 then return {'ok', 0} end
redis.call('DEL', C, PROBES)
redis.call('ZREM', INDEX, key)
redis.call('PUBLISH', EVENTS, cjson.encode({'reset', key, now}))
return {'ok', 1}
)lua";

constexpr std::string_view kAcquire = R"lua(
load(true); settle()
local p = policy()
if c.ps then
  if c.ps == 'closed' then return result('ok', 1, '', 0) end
  return result('ok', 0, '', c.pu ~= 0 and c.pu - now or p[2])
end
if c.state == 'closed' then return result('ok', 1, '', 0) end
if c.state == 'open' then
  local elapsed = now - c.lsc
  if elapsed < p[2] then return result('ok', 0, '', p[2] - elapsed) end
  -- The first caller after the timeout moves it to half-open, once.
  transition('half-open', 'timeout')
end
if redis.call('ZCARD', PROBES) >= p[3] then return result('ok', 0, '', p[2]) end
local permit = string.format('%x%08x', c.gen, redis.call('INCR', GEN .. ':permits') % 4294967296)
redis.call('ZADD', PROBES, now + p[5], permit)
redis.call('ZADD', DEADLINES, 'LT', now + p[5], key)
redis.call('PEXPIRE', PROBES, p[5] + 60000)
return result('ok', 1, permit, 0)
)lua";

// ARGV 7: outcome, 8: generation or '', 9: permit or ''.
constexpr std::string_view kReport = R"lua(
load(true); settle()
if ARGV[8] ~= '' and tonumber(ARGV[8]) ~= c.gen then return result('stale') end
local failure = ARGV[7] == 'failure'
local function record()
  if failure then c.fc = c.fc + 1; c.lft = now else c.sc = c.sc + 1 end
  changed = true
end
local p = policy()
if not c.ps and c.state == 'half-open' then
  if ARGV[9] == '' or not redis.call('ZSCORE', PROBES, ARGV[9]) then return result('no_permit') end
  redis.call('ZREM', PROBES, ARGV[9])
  record()
  if failure then transition('open', 'probe-failure')
  elseif c.sc >= p[4] then transition('closed', 'probe-success') end
else
  record()
  if not c.ps and c.state == 'closed' and failure and c.fc >= p[1] then
    transition('open', 'threshold')
  end
end
return result('ok')
)lua";

// ARGV 7: state, 8: ttl ms (0 = none), 9: reason, 10: uid, 11: pid.
constexpr std::string_view kForce = R"lua(
load(true); settle()
local ttl = tonumber(ARGV[8])
c.ps = ARGV[7]; c.pu = ttl > 0 and now + ttl or 0; c.pr = ARGV[9]
c.puid = tonumber(ARGV[10]); c.ppid = tonumber(ARGV[11])
if ttl > 0 then redis.call('ZADD', DEADLINES, 'LT', c.pu, key) end
transition(ARGV[7], 'force')
return result('ok')
)lua";

constexpr std::string_view kUnforce = R"lua(
load(true); settle()
if c.ps then lift_pin('unforce') end
return result('ok')
)lua";

// ARGV 7: "1" to drop the override first; 8..12: per policy field, "" to
// keep, "-" to remove, or the new value. Answers the override after.
constexpr std::string_view kPolicy = R"lua(
local names = {'failureThreshold', 'resetTimeoutMs', 'halfOpenMax', 'successThreshold', 'probeLeaseMs'}
if ARGV[7] == '1' then redis.call('DEL', POL) end
for i = 1, 5 do
  local v = ARGV[7 + i]
  if v == '-' then redis.call('HDEL', POL, names[i])
  elseif v ~= '' then redis.call('HSET', POL, names[i], v) end
end
local o = redis.call('HMGET', POL, unpack(names))
if redis.call('EXISTS', POL) == 1 then redis.call('ZADD', POLICIES, 0, key)
else redis.call('ZREM', POLICIES, key) end
return {'ok', o[1] or '', o[2] or '', o[3] or '', o[4] or '', o[5] or ''}
)lua";

// ARGV 7: prefix, 8: after, 9: limit. Every key with a circuit or a policy
// override, in key order: {next or '', then 17 fields per key: key, the 11
// circuit fields ('' state: no circuit), the 5 policy override fields}.
constexpr std::string_view kExport = R"lua(
local prefix, after, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])
local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
local function take(set)
  local keys = {}
  for _, k in ipairs(redis.call('ZRANGEBYLEX', set, start, '+', 'LIMIT', 0, limit)) do
    if string.sub(k, 1, #prefix) ~= prefix then break end
    keys[#keys + 1] = k
  end
  return keys
end
local a, b = take(INDEX), take(POLICIES)
local keys, i, j = {}, 1, 1
while (i <= #a or j <= #b) and #keys < limit do
  if j > #b or (i <= #a and a[i] < b[j]) then keys[#keys + 1] = a[i]; i = i + 1
  elseif i > #a or b[j] < a[i] then keys[#keys + 1] = b[j]; j = j + 1
  else keys[#keys + 1] = a[i]; i = i + 1; j = j + 1 end
end
local more = #a == limit or #b == limit or i <= #a or j <= #b
local out = {(more and #keys > 0) and keys[#keys] or ''}
local names = {'failureThreshold', 'resetTimeoutMs', 'halfOpenMax', 'successThreshold', 'probeLeaseMs'}
for _, k in ipairs(keys) do
  out[#out + 1] = k
  local h = redis.call('HMGET', P .. 'c:' .. k, 'state', 'fc', 'sc', 'lft', 'lsc', 'gen', 'ps', 'pu', 'pr', 'puid', 'ppid')
  for f = 1, 11 do out[#out + 1] = h[f] or '' end
  local o = redis.call('HMGET', P .. 'policy:' .. k, unpack(names))
  for f = 1, 5 do out[#out + 1] = o[f] or '' end
end
return out
)lua";

// ARGV 7: '1' with a circuit; 8..18: state, fc, sc, lft, lsc, gen, ps ('' =
// not pinned), pu, pr, puid, ppid; 19..23: the policy override's fields
// ('' = not set). Makes the key hold exactly that.
constexpr std::string_view kImport = R"lua(
local names = {'failureThreshold', 'resetTimeoutMs', 'halfOpenMax', 'successThreshold', 'probeLeaseMs'}
if ARGV[7] == '1' then
  if redis.call('EXISTS', C) == 0 and redis.call('ZCARD', INDEX) >= max_circuits then
    error({err = 'TOO_MANY_CIRCUITS the shared store holds its maximum number of circuits'})
  end
  redis.call('DEL', C, PROBES)
  redis.call('HSET', C, 'state', ARGV[8], 'fc', ARGV[9], 'sc', ARGV[10], 'lft', ARGV[11],
             'lsc', ARGV[12], 'gen', ARGV[13])
  if ARGV[14] ~= '' then
    redis.call('HSET', C, 'ps', ARGV[14], 'pu', ARGV[15], 'pr', ARGV[16], 'puid', ARGV[17], 'ppid', ARGV[18])
    if tonumber(ARGV[15]) ~= 0 then redis.call('ZADD', DEADLINES, ARGV[15], key) end
  end
  redis.call('ZADD', INDEX, 0, key)
  -- Generations stay unique: the counter moves past the imported one.
  if tonumber(redis.call('GET', GEN) or '0') < tonumber(ARGV[13]) then redis.call('SET', GEN, ARGV[13]) end
else
  redis.call('DEL', C, PROBES)
  redis.call('ZREM', INDEX, key)
end
redis.call('DEL', POL)
for f = 1, 5 do
  if ARGV[18 + f] ~= '' then redis.call('HSET', POL, names[f], ARGV[18 + f]) end
end
if redis.call('EXISTS', POL) == 1 then redis.call('ZADD', POLICIES, 0, key)
else redis.call('ZREM', POLICIES, key) end
return {'ok'}
)lua";

// ARGV 7: prefix, 8: after ('' = from the start), 9: limit, 10: state
// filter ('' = any). Answers {next or '', then 12 fields per circuit: key,
// state, fc, sc, lft, lsc, gen, ps, pu, pr, puid, ppid}.
constexpr std::string_view kList = R"lua(
local prefix, after, limit, want = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local P = string.sub(INDEX, 1, #INDEX - #'index')
local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
local out = {''}
local found, examined, last = 0, 0, ''
while true do
  local keys = redis.call('ZRANGEBYLEX', INDEX, start, '+', 'LIMIT', 0, 256)
  if #keys == 0 then return out end
  for _, k in ipairs(keys) do
    if string.sub(k, 1, #prefix) ~= prefix then return out end
    if found == limit or examined == 10000 then out[1] = last; return out end -- kRedisMaxListScan
    examined = examined + 1
    last = k
    local h = redis.call('HMGET', P .. 'c:' .. k, 'state', 'fc', 'sc', 'lft', 'lsc', 'gen', 'ps', 'pu', 'pr', 'puid', 'ppid')
    if h[1] and (want == '' or h[1] == want) then
      found = found + 1
      out[#out + 1] = k
      for i = 1, 11 do out[#out + 1] = h[i] or '' end
    end
  end
  start = '(' .. keys[#keys]
end
)lua";

// Applies what time alone decides to circuits nobody touches: every cbd
// runs it every 100 ms (as the memory store's timer); at most 100 keys a run.
constexpr std::string_view kSweep = R"lua(
local due = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', now, 'LIMIT', 0, 100)
for _, k in ipairs(due) do
  key = k; C = P .. 'c:' .. k; PROBES = P .. 'probes:' .. k; POL = P .. 'policy:' .. k
  tr = nil; changed = false
  if load(false) then
    settle()
    save()
    local next_at = nil
    local first = redis.call('ZRANGE', PROBES, 0, 0, 'WITHSCORES')
    if first[2] then next_at = tonumber(first[2]) end
    if c.ps and c.pu ~= 0 and (not next_at or c.pu < next_at) then next_at = c.pu end
    if next_at then redis.call('ZADD', DEADLINES, next_at, k) else redis.call('ZREM', DEADLINES, k) end
  else
    redis.call('ZREM', DEADLINES, k)
  end
end
return {'ok', #due}
)lua";

std::string compose(std::string_view body) {
    std::string s(kPrelude);
    s += body;
    return s;
}

} // namespace

const std::string& redis_script_source(RedisScript script) {
    static const std::array<std::string, kRedisScriptCount> sources = {
        compose(kGet),    compose(kSuccess), compose(kFailure),
        compose(kTransition), compose(kReset), compose(kAcquire),
        compose(kReport), compose(kForce),   compose(kUnforce),
        compose(kPolicy), compose(kList), compose(kSweep), compose(kExport),
        compose(kImport),
    };
    return sources[static_cast<std::size_t>(script)];
}

std::array<std::string, 6> redis_script_keys(std::string_view prefix, std::string_view key) {
    const std::string p(prefix);
    const std::string k(key);
    return {p + "c:" + k, p + "probes:" + k, p + "generation", p + "policy:" + k, p + "events",
            p + "index"};
}

} // namespace cbd
