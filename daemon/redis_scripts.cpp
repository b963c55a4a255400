// The Redis backend's scripts (see redis_scripts.hpp and docs/REDIS.md).
// Every script is: the generated constants, the shared prelude (the circuit
// as a Lua table read and checked from its hash, time, settling of expired
// pins and leases, the reference's transition rules with a new generation,
// events published, one result shape), then its own body.
#include "daemon/redis_scripts.hpp"

#include "common/policy.hpp"
#include "common/protocol.hpp"
#include "daemon/circuit_store.hpp"
#include "daemon/stats.hpp"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>

namespace cbd {

namespace {

// The Lua names of the policy fields (indices into a policy array), and of
// the circuit hash's fields (F_: the field's name, I_: its index), in the
// C++ order.
constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyLuaNames = {
    "PF_FAILURE_THRESHOLD", "PF_RESET_TIMEOUT", "PF_HALF_OPEN_MAX", "PF_SUCCESS_THRESHOLD",
    "PF_PROBE_LEASE"};
constexpr std::array<std::string_view, kRedisCircuitFieldCount> kCircuitLuaNames = {
    "STATE", "FC", "SC", "LFT", "LSC", "GEN", "PS", "PU", "PR", "PUID", "PPID"};
constexpr std::array<std::pair<TransitionCause, std::string_view>, kTransitionCauseCount>
    kCauseLuaNames = {{{TransitionCause::Manual, "CAUSE_MANUAL"},
                       {TransitionCause::Threshold, "CAUSE_THRESHOLD"},
                       {TransitionCause::Timeout, "CAUSE_TIMEOUT"},
                       {TransitionCause::ProbeSuccess, "CAUSE_PROBE_SUCCESS"},
                       {TransitionCause::ProbeFailure, "CAUSE_PROBE_FAILURE"},
                       {TransitionCause::LeaseExpired, "CAUSE_LEASE_EXPIRED"},
                       {TransitionCause::Force, "CAUSE_FORCE"},
                       {TransitionCause::Unforce, "CAUSE_UNFORCE"},
                       {TransitionCause::ForceExpired, "CAUSE_FORCE_EXPIRED"}}};
constexpr std::array<std::string_view, kRedisStatusNames.size()> kStatusLuaNames = {
    "ST_OK", "ST_CONFLICT", "ST_FORCED", "ST_NO_PERMIT", "ST_STALE"};

// ARGV: 1 the key, then the policy numbers, then the operation's own
// (`op` in Lua), then the trailing ones (max circuits, time).
constexpr std::size_t kFirstPolicyArg = 2;
constexpr std::size_t kFirstOpArg = kFirstPolicyArg + kPolicyFieldCount;
constexpr std::size_t kTrailingArgs = 2;

// A Lua string literal of a name (names hold no quote or backslash).
std::string quoted(std::string_view s) {
    std::string out = "'";
    for (char ch : s)
        if (ch == '\'' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20)
            throw std::logic_error("a Lua constant holds a character it cannot");
        else
            out += ch;
    return out + "'";
}

std::string build_constants() {
    std::string out = "-- generated from the C++ definitions (redis_scripts.cpp)\n";
    auto def = [&out](std::string_view name, const std::string& value) {
        out += "local ";
        out += name;
        out += " = ";
        out += value;
        out += '\n';
    };
    auto num = [](auto v) { return std::to_string(v); };
    auto table = [](const auto& names) {
        std::string t = "{";
        for (std::size_t i = 0; i < names.size(); ++i)
            t += (i ? ", " : "") + quoted(names[i]);
        return t + "}";
    };

    def("MAX_INT", num(kRedisMaxInteger));
    def("MAX_POLICY", num(kMaxPolicyValue));
    def("MAX_REASON_BYTES", num(kMaxReasonBytes));
    def("MAX_UID", num(std::numeric_limits<std::uint32_t>::max()));
    def("MAX_PID", num(std::numeric_limits<std::int32_t>::max()));
    def("SCAN_PER_CALL", num(kRedisScanPerCall));
    def("SWEEP_PER_CALL", num(kRedisSweepPerCall));
    def("SHOWN_BYTES", num(kRedisShownValueBytes));
    def("PERMIT_MODULUS", num(std::uint64_t{1} << 32)); // a permit's counter part is 8 hex digits
    def("PROBES_GRACE_MS", num(kRedisProbesGraceMs));
    def("A_POLICY", num(kFirstPolicyArg));
    def("A_OP", num(kFirstOpArg));
    def("TRAILING_ARGS", num(kTrailingArgs));

    def("POLICY_FIELD_COUNT", num(kPolicyFieldCount));
    def("POLICY_FIELDS", table(kPolicyFieldNames));
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        def(kPolicyLuaNames[i], num(i + 1));

    def("CIRCUIT_FIELD_COUNT", num(kRedisCircuitFieldCount));
    def("CIRCUIT_FIELDS", table(kRedisCircuitFields));
    for (std::size_t i = 0; i < kRedisCircuitFieldCount; ++i) {
        def("F_" + std::string(kCircuitLuaNames[i]), quoted(kRedisCircuitFields[i]));
        def("I_" + std::string(kCircuitLuaNames[i]), num(i + 1));
    }

    def("CLOSED", quoted(state_name(State::Closed)));
    def("OPEN", quoted(state_name(State::Open)));
    def("HALF_OPEN", quoted(state_name(State::HalfOpen)));
    for (const auto& [cause, name] : kCauseLuaNames)
        def(name, quoted(transition_cause_name(cause)));
    for (std::size_t i = 0; i < kRedisStatusNames.size(); ++i)
        def(kStatusLuaNames[i], quoted(kRedisStatusNames[i]));
    def("PAGE_END", quoted(kRedisPageEnd));
    def("PAGE_MORE", quoted(kRedisPageMore));
    def("ERR_TOO_MANY", quoted(kRedisErrTooMany));
    def("ERR_BACKEND", quoted(kRedisErrBackend));
    def("ARG_TRUE", quoted(kRedisArgTrue));
    def("ARG_REMOVE", quoted(kRedisArgRemove));
    def("OUTCOME_FAILURE", quoted(kRedisOutcomeFailure));
    def("EV_TRANSITION", quoted(kRedisEventTransition));
    def("EV_RESET", quoted(kRedisEventReset));

    def("K_CIRCUIT", quoted(kRedisCircuitPart));
    def("K_PROBES", quoted(kRedisProbesPart));
    def("K_POLICY", quoted(kRedisPolicyPart));
    def("K_GENERATION", quoted(kRedisGenerationKey));
    def("K_PERMITS", quoted(kRedisPermitCounterKey));
    def("K_EVENTS", quoted(kRedisEventsKey));
    def("K_INDEX", quoted(kRedisIndexKey));
    def("K_POLICIES", quoted(kRedisPoliciesKey));
    def("K_DEADLINES", quoted(kRedisDeadlinesKey));
    def("K_COUNTS", quoted(kRedisCountsKey));
    def("COUNT_PINNED", quoted(kRedisPinnedCountField));
    return out;
}

// KEYS: 1 circuit hash, 2 probe permits (zset: permit -> lease end),
// 3 generation counter, 4 the key's policy override (hash), 5 the events
// channel, 6 the key index (zset, all scores 0, for listing).
constexpr std::string_view kPrelude = R"lua(
local ck, probes_key, gen_key, pol_key, events_key, index_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local key = ARGV[1]
local op = {unpack(ARGV, A_OP, #ARGV - TRAILING_ARGS)}
local pfx = string.sub(index_key, 1, #index_key - #K_INDEX)
local deadlines_key = pfx .. K_DEADLINES
local policies_key = pfx .. K_POLICIES
local counts_key = pfx .. K_COUNTS
local max_circuits = tonumber(ARGV[#ARGV - 1])
local now
if ARGV[#ARGV] ~= '' then
  now = tonumber(ARGV[#ARGV]) -- the daemon's test clock
else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end
local c = nil
local changed = false
local tr = nil

local function fail(what)
  error({err = ERR_BACKEND .. ' ' .. what})
end

local function too_many(what)
  error({err = ERR_TOO_MANY .. ' ' .. what})
end

-- Redis's own errors on cbd's keys (a key of the wrong type, edited by
-- hand) become backend errors naming the key; the others (a read-only
-- replica, out of memory) stay what they are: outages.
local function rcall(cmd, rkey, ...)
  local r = redis.pcall(cmd, rkey, ...)
  if type(r) == 'table' and r.err then
    local code = string.match(r.err, '^(%u+)')
    if code == 'WRONGTYPE' or code == 'ERR' then fail('Redis key ' .. rkey .. ': ' .. r.err) end
    error(r)
  end
  return r
end

local function decimal(n)
  return string.format('%d', n)
end

local function shown(v)
  if not v then return 'no value' end
  return string.format('%q', string.sub(tostring(v), 1, SHOWN_BYTES))
end

-- `where` says where the value is: redis_key(k), or the import's circuit.
local function redis_key(k)
  return 'Redis key ' .. k
end

local function bad(where, field, v, want)
  fail(where .. (field and (' field ' .. field) or '') .. ' holds ' .. shown(v) ..
       ', not ' .. want)
end

-- An integer in lo..hi in decimal digits (no sign, no point), or nil.
-- The upper bound is compared as digits: past 2^53 a Lua number rounds.
local top_digits = {}
local function int_in(v, lo, hi)
  if type(v) ~= 'string' then return nil end
  local digits = string.match(v, '^0*(%d+)$')
  if not digits then return nil end
  local top = top_digits[hi]
  if not top then top = decimal(hi); top_digits[hi] = top end
  if #digits >= #top and (#digits > #top or digits > top) then return nil end
  local n = tonumber(digits)
  if n < lo then return nil end
  return n
end

local function int_field(where, field, v, lo, hi)
  local n = int_in(v, lo, hi)
  if not n then bad(where, field, v, 'an integer from ' .. decimal(lo) .. ' to ' .. decimal(hi)) end
  return n
end

local function is_state(s)
  return s == CLOSED or s == OPEN or s == HALF_OPEN
end

-- A circuit from its fields in hash order (HMGET, or an import's
-- arguments), checked as the protocol checks an import: `where` names
-- the source in errors.
local function read_circuit(where, h)
  if not is_state(h[I_STATE]) then bad(where, F_STATE, h[I_STATE], 'a state') end
  local r = {state = h[I_STATE],
             fc = int_field(where, F_FC, h[I_FC], 0, MAX_INT),
             sc = int_field(where, F_SC, h[I_SC], 0, MAX_INT),
             lft = int_field(where, F_LFT, h[I_LFT], 0, MAX_INT),
             lsc = int_field(where, F_LSC, h[I_LSC], 0, MAX_INT),
             gen = int_field(where, F_GEN, h[I_GEN], 0, MAX_INT)}
  if h[I_PS] and h[I_PS] ~= '' then
    if h[I_PS] ~= CLOSED and h[I_PS] ~= OPEN then bad(where, F_PS, h[I_PS], 'open or closed') end
    r.ps = h[I_PS]
    r.pu = int_field(where, F_PU, h[I_PU], 0, MAX_INT)
    local reason = h[I_PR]
    if type(reason) ~= 'string' or #reason > MAX_REASON_BYTES or string.find(reason, '%c') then
      bad(where, F_PR, reason, 'a reason of at most ' .. decimal(MAX_REASON_BYTES) ..
          ' bytes without control characters')
    end
    r.pr = reason
    r.puid = int_field(where, F_PUID, h[I_PUID], 0, MAX_UID)
    r.ppid = int_field(where, F_PPID, h[I_PPID], 0, MAX_PID)
  end
  return r
end

-- A key's policy override, checked as `configure` checks one. Fields with
-- keep[i] false are about to be replaced and are not read.
local function read_override(rkey, keep)
  local o = rcall('HMGET', rkey, unpack(POLICY_FIELDS))
  local out = {}
  for i = 1, POLICY_FIELD_COUNT do
    if o[i] and (not keep or keep[i]) then
      out[i] = int_field(redis_key(rkey), POLICY_FIELDS[i], o[i], 1, MAX_POLICY)
    end
  end
  return out
end

-- The daemon's policy for the key with the key's override from Redis on
-- top. As in PolicySet: unless some layer sets probeLeaseMs (the daemon
-- sends 0 when none of its own does), the lease is the reset timeout.
local function policy()
  local o = read_override(pol_key)
  local p = {}
  for i = 1, POLICY_FIELD_COUNT do p[i] = o[i] or tonumber(ARGV[A_POLICY + i - 1]) end
  if not o[PF_PROBE_LEASE] and p[PF_PROBE_LEASE] == 0 then p[PF_PROBE_LEASE] = p[PF_RESET_TIMEOUT] end
  return p
end

local function next_generation()
  local g = rcall('GET', gen_key)
  if g and int_field(redis_key(gen_key), nil, g, 0, MAX_INT) >= MAX_INT then
    fail('Redis key ' .. gen_key .. ': the generation counter is at its maximum (' ..
         decimal(MAX_INT) .. ')')
  end
  return rcall('INCR', gen_key)
end

-- Counts and times stop at MAX_INT rather than leave the range.
local function bump(n)
  if n < MAX_INT then return n + 1 end
  return n
end

local function count(field, by)
  rcall('HINCRBY', counts_key, field, by)
end

-- Takes a circuit about to be removed or replaced out of the counts,
-- whatever else it holds (reset and import must work on a bad circuit).
local function uncount(rkey)
  local h = redis.pcall('HMGET', rkey, F_STATE, F_PS)
  if type(h) ~= 'table' or h.err then return end
  if is_state(h[1]) then count(h[1], -1) end
  if h[2] then count(COUNT_PINNED, -1) end
end

local function load(create)
  local h = rcall('HMGET', ck, unpack(CIRCUIT_FIELDS))
  if not h[I_STATE] then
    -- A hash without a state is not a circuit nobody made yet.
    if rcall('EXISTS', ck) == 1 then bad(redis_key(ck), F_STATE, h[I_STATE], 'a state') end
    if not create then return false end
    if rcall('ZCARD', index_key) >= max_circuits then too_many('the shared store holds its maximum number of circuits') end
    c = {state = CLOSED, fc = 0, sc = 0, lft = 0, lsc = now, gen = next_generation()}
    rcall('ZADD', index_key, 0, key)
    changed = true
    return true
  end
  c = read_circuit(redis_key(ck), h)
  c.was_state = c.state
  c.was_pinned = c.ps ~= nil
  return true
end

local function publish(from, to, cause)
  -- Numbers as decimal strings: cjson writes 14 significant digits.
  rcall('PUBLISH', events_key, cjson.encode({EV_TRANSITION, key, from, to, decimal(now), cause,
    decimal(c.gen), c.state, decimal(c.fc), decimal(c.sc), decimal(c.lft), decimal(c.lsc),
    c.ps or '', decimal(c.pu or 0), c.pr or '', decimal(c.puid or 0), decimal(c.ppid or 0)}))
end

local function transition(to, cause)
  c.gen = next_generation() -- first: it is the one step that can fail
  local from = c.state
  c.state = to
  c.lsc = now
  if to == CLOSED then c.fc = 0; c.sc = 0 elseif to == HALF_OPEN then c.sc = 0 end
  rcall('DEL', probes_key)
  changed = true
  tr = {from, to, cause}
  publish(from, to, cause)
end

local function lift_pin(cause)
  c.gen = next_generation()
  c.ps = nil; c.pu = nil; c.pr = nil; c.puid = nil; c.ppid = nil
  changed = true
  tr = {c.state, c.state, cause}
  publish(c.state, c.state, cause)
end

-- What time alone decides: an expired pin lifts; an expired probe lease
-- counts as a failed probe and re-opens the circuit.
local function settle()
  if c.ps and c.pu ~= 0 and now >= c.pu then lift_pin(CAUSE_FORCE_EXPIRED) end
  if rcall('ZCOUNT', probes_key, '-inf', now) > 0 then
    c.fc = bump(c.fc)
    c.lft = now
    transition(OPEN, CAUSE_LEASE_EXPIRED)
  end
end

local function save()
  if not changed then return end
  rcall('HSET', ck, F_STATE, c.state, F_FC, decimal(c.fc), F_SC, decimal(c.sc), F_LFT, decimal(c.lft),
        F_LSC, decimal(c.lsc), F_GEN, decimal(c.gen))
  if c.ps then
    rcall('HSET', ck, F_PS, c.ps, F_PU, decimal(c.pu), F_PR, c.pr, F_PUID, decimal(c.puid),
          F_PPID, decimal(c.ppid))
  elseif c.was_pinned then
    rcall('HDEL', ck, F_PS, F_PU, F_PR, F_PUID, F_PPID)
  end
  if c.state ~= c.was_state then
    if c.was_state then count(c.was_state, -1) end
    count(c.state, 1)
  end
  local pinned = c.ps ~= nil
  if pinned ~= (c.was_pinned == true) then count(COUNT_PINNED, pinned and 1 or -1) end
end

local function result(status, x1, x2, x3)
  save()
  return {status, c.state, c.fc, c.sc, c.lft, c.lsc, c.gen, c.ps or '', c.pu or 0, c.pr or '',
          c.puid or 0, c.ppid or 0, tr and tr[1] or '', tr and tr[2] or '', tr and tr[3] or '',
          x1 or 0, x2 or '', x3 or 0}
end

-- A circuit's fields as a paged script answers them: the hash's own
-- strings (HMGET, in hash order), once read_circuit has checked them.
local function append_fields(out, h, r)
  local n = #out
  for i = 1, CIRCUIT_FIELD_COUNT do
    n = n + 1
    out[n] = (r.ps or i < I_PS) and h[i] or ''
  end
end
)lua";

// op: ARG_TRUE to create the circuit if unknown, else answer the default snapshot
// without creating it (a read-level peer; generation 0).
constexpr std::string_view kGet = R"lua(
if not load(op[1] == ARG_TRUE) then
  c = {state = CLOSED, fc = 0, sc = 0, lft = 0, lsc = now, gen = 0}
  return result(ST_OK)
end
settle()
return result(ST_OK)
)lua";

constexpr std::string_view kSuccess = R"lua(
load(true); settle()
c.sc = bump(c.sc); changed = true
return result(ST_OK)
)lua";

constexpr std::string_view kFailure = R"lua(
load(true); settle()
c.fc = bump(c.fc); c.lft = now; changed = true
return result(ST_OK)
)lua";

// op: to, expected state or '', expected generation or ''.
constexpr std::string_view kTransition = R"lua(
load(true); settle()
if (op[2] ~= '' and op[2] ~= c.state) or (op[3] ~= '' and tonumber(op[3]) ~= c.gen) then
  return result(ST_CONFLICT)
end
if c.ps then return result(ST_FORCED) end
transition(op[1], CAUSE_MANUAL)
return result(ST_OK)
)lua";

// Reset is how an operator clears a circuit, whatever it holds: it reads
// nothing it would have to refuse.
constexpr std::string_view kReset = R"lua(
if rcall('EXISTS', ck) == 0 then return {ST_OK, 0} end
uncount(ck)
rcall('DEL', ck, probes_key)
rcall('ZREM', index_key, key)
rcall('ZREM', deadlines_key, key)
rcall('PUBLISH', events_key, cjson.encode({EV_RESET, key, decimal(now)}))
return {ST_OK, 1}
)lua";

// The policy is read first: a bad override is refused before anything is
// written.
constexpr std::string_view kAcquire = R"lua(
local p = policy()
load(true); settle()
if c.ps then
  if c.ps == CLOSED then return result(ST_OK, 1, '', 0) end
  return result(ST_OK, 0, '', c.pu ~= 0 and c.pu - now or p[PF_RESET_TIMEOUT])
end
if c.state == CLOSED then return result(ST_OK, 1, '', 0) end
if c.state == OPEN then
  local elapsed = now - c.lsc
  if elapsed < p[PF_RESET_TIMEOUT] then return result(ST_OK, 0, '', p[PF_RESET_TIMEOUT] - elapsed) end
  -- The first caller after the timeout moves it to half-open, once.
  transition(HALF_OPEN, CAUSE_TIMEOUT)
end
if rcall('ZCARD', probes_key) >= p[PF_HALF_OPEN_MAX] then return result(ST_OK, 0, '', p[PF_RESET_TIMEOUT]) end
local permit = string.format('%x%08x', c.gen, rcall('INCR', pfx .. K_PERMITS) % PERMIT_MODULUS)
local lease_end = now + p[PF_PROBE_LEASE]
rcall('ZADD', probes_key, lease_end, permit)
rcall('ZADD', deadlines_key, 'LT', lease_end, key)
rcall('PEXPIRE', probes_key, p[PF_PROBE_LEASE] + PROBES_GRACE_MS)
return result(ST_OK, 1, permit, 0)
)lua";

// op: outcome, generation or '', permit or ''.
constexpr std::string_view kReport = R"lua(
local p = policy()
load(true); settle()
if op[2] ~= '' and tonumber(op[2]) ~= c.gen then return result(ST_STALE) end
local failure = op[1] == OUTCOME_FAILURE
local function record()
  if failure then c.fc = bump(c.fc); c.lft = now else c.sc = bump(c.sc) end
  changed = true
end
if not c.ps and c.state == HALF_OPEN then
  if op[3] == '' or not rcall('ZSCORE', probes_key, op[3]) then return result(ST_NO_PERMIT) end
  rcall('ZREM', probes_key, op[3])
  record()
  if failure then transition(OPEN, CAUSE_PROBE_FAILURE)
  elseif c.sc >= p[PF_SUCCESS_THRESHOLD] then transition(CLOSED, CAUSE_PROBE_SUCCESS) end
else
  record()
  if not c.ps and c.state == CLOSED and failure and c.fc >= p[PF_FAILURE_THRESHOLD] then
    transition(OPEN, CAUSE_THRESHOLD)
  end
end
return result(ST_OK)
)lua";

// op: state, ttl ms (0 = none), reason, uid, pid.
constexpr std::string_view kForce = R"lua(
load(true); settle()
local ttl = tonumber(op[2])
c.ps = op[1]; c.pu = ttl > 0 and now + ttl or 0; c.pr = op[3]
c.puid = tonumber(op[4]); c.ppid = tonumber(op[5])
transition(op[1], CAUSE_FORCE)
if ttl > 0 then rcall('ZADD', deadlines_key, 'LT', c.pu, key) end
return result(ST_OK)
)lua";

constexpr std::string_view kUnforce = R"lua(
load(true); settle()
if c.ps then lift_pin(CAUSE_UNFORCE) end
return result(ST_OK)
)lua";

// op: ARG_TRUE to drop the override first; then per policy field, '' to
// keep, ARG_REMOVE to remove, or the new value. Without changes (the
// `policy` op) nothing is written. Answers the override after.
constexpr std::string_view kPolicy = R"lua(
local clear = op[1] == ARG_TRUE
local keep, writes = {}, clear
for i = 1, POLICY_FIELD_COUNT do
  keep[i] = not clear and op[1 + i] == ''
  if op[1 + i] ~= '' then writes = true end
end
local had = rcall('EXISTS', pol_key) == 1
local o = {}
if not clear then o = read_override(pol_key, keep) end
local any = false
for i = 1, POLICY_FIELD_COUNT do
  local v = op[1 + i]
  if v == ARG_REMOVE then o[i] = nil elseif v ~= '' then o[i] = tonumber(v) end
  if o[i] then any = true end
end
if writes then
  -- Key overrides count against --max-circuits, as in memory.
  if any and not had and rcall('ZCARD', policies_key) >= max_circuits then too_many('the shared store holds its maximum number of key policies') end
  rcall('DEL', pol_key)
  for i = 1, POLICY_FIELD_COUNT do
    if o[i] then rcall('HSET', pol_key, POLICY_FIELDS[i], decimal(o[i])) end
  end
  if any then rcall('ZADD', policies_key, 0, key) else rcall('ZREM', policies_key, key) end
end
local out = {ST_OK}
for i = 1, POLICY_FIELD_COUNT do out[#out + 1] = o[i] and decimal(o[i]) or '' end
return out
)lua";

// One call of a `list` page. op: prefix, after ('' = from the prefix on),
// matches wanted, state filter ('' = any), most keys to examine (at most
// SCAN_PER_CALL). Answers {PAGE_END or PAGE_MORE, the last key examined,
// keys examined, then 12 fields per circuit: key, then the 11 circuit
// fields}. Every circuit examined is checked, matching or not.
constexpr std::string_view kList = R"lua(
local prefix, after, want, filter = op[1], op[2], tonumber(op[3]), op[4]
local budget = math.min(tonumber(op[5]), SCAN_PER_CALL)
local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
local keys = rcall('ZRANGEBYLEX', index_key, start, '+', 'LIMIT', 0, budget)
local out = {PAGE_MORE, '', 0}
local found = 0
for _, k in ipairs(keys) do
  if string.sub(k, 1, #prefix) ~= prefix then out[1] = PAGE_END; return out end
  out[2] = k
  out[3] = out[3] + 1
  local rkey = pfx .. K_CIRCUIT .. k
  local h = rcall('HMGET', rkey, unpack(CIRCUIT_FIELDS))
  if h[I_STATE] or rcall('EXISTS', rkey) == 1 then
    local r = read_circuit(redis_key(rkey), h)
    if filter == '' or r.state == filter then
      out[#out + 1] = k
      append_fields(out, h, r)
      found = found + 1
      if found == want then return out end
    end
  end
end
if #keys < budget then
  out[1] = PAGE_END
else
  -- Is there another key in the range? Then the page goes on; else the
  -- caller need not call again (nor answer a `next`).
  local beyond = rcall('ZRANGEBYLEX', index_key, '(' .. keys[#keys], '+', 'LIMIT', 0, 1)
  if not beyond[1] or string.sub(beyond[1], 1, #prefix) ~= prefix then out[1] = PAGE_END end
end
return out
)lua";

// One call of an `export` page. op: prefix, after, keys wanted. Every key
// with a circuit or a policy override, in key order; each call reads at
// most SCAN_PER_CALL keys of each index. Answers {PAGE_END or PAGE_MORE,
// the key to go on after, then 17 fields per key: key, the 11 circuit
// fields ('' state: no circuit), the 5 policy override fields}.
constexpr std::string_view kExport = R"lua(
local prefix, after, want = op[1], op[2], tonumber(op[3])
local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
local function take(set)
  local got = rcall('ZRANGEBYLEX', set, start, '+', 'LIMIT', 0, SCAN_PER_CALL)
  local ks = {}
  for _, k in ipairs(got) do
    if string.sub(k, 1, #prefix) ~= prefix then return ks, false end
    ks[#ks + 1] = k
  end
  return ks, #got == SCAN_PER_CALL
end
local a, a_full = take(index_key)
local b, b_full = take(policies_key)
-- Past the last key of a full take, that index holds keys not read yet:
-- the merge is complete only up to the smaller such key.
local cut = nil
if a_full then cut = a[#a] end
if b_full and (not cut or b[#b] < cut) then cut = b[#b] end
local keys, i, j = {}, 1, 1
while #keys < want do
  local k
  if i <= #a and (j > #b or a[i] <= b[j]) then
    k = a[i]
    if j <= #b and b[j] == k then j = j + 1 end
    i = i + 1
  elseif j <= #b then
    k = b[j]; j = j + 1
  else
    break
  end
  if cut and k > cut then break end
  keys[#keys + 1] = k
end
local out = {PAGE_END, ''}
if #keys == want then out[1] = PAGE_MORE; out[2] = keys[#keys]
elseif cut then out[1] = PAGE_MORE; out[2] = cut end
for _, k in ipairs(keys) do
  out[#out + 1] = k
  local rkey = pfx .. K_CIRCUIT .. k
  local h = rcall('HMGET', rkey, unpack(CIRCUIT_FIELDS))
  if h[I_STATE] or rcall('EXISTS', rkey) == 1 then
    append_fields(out, h, read_circuit(redis_key(rkey), h))
  else
    for _ = 1, CIRCUIT_FIELD_COUNT do out[#out + 1] = '' end
  end
  local o = read_override(pfx .. K_POLICY .. k)
  for f = 1, POLICY_FIELD_COUNT do out[#out + 1] = o[f] and decimal(o[f]) or '' end
end
return out
)lua";

// op: ARG_TRUE with a circuit; then the 11 circuit fields in hash order (ps
// '' = not pinned); then the policy override's fields ('' = not set).
// Makes the key hold exactly that; everything is checked before anything
// changes.
constexpr std::string_view kImport = R"lua(
local with_circuit = op[1] == ARG_TRUE
local fields = {unpack(op, 2, 1 + CIRCUIT_FIELD_COUNT)}
local pol = {unpack(op, 2 + CIRCUIT_FIELD_COUNT, 1 + CIRCUIT_FIELD_COUNT + POLICY_FIELD_COUNT)}
local r = nil
local where = 'the imported circuit ' .. key
if with_circuit then r = read_circuit(where, fields) end
local o, any = {}, false
for f = 1, POLICY_FIELD_COUNT do
  if pol[f] ~= '' then o[f] = int_field(where, POLICY_FIELDS[f], pol[f], 1, MAX_POLICY); any = true end
end
local current_gen = rcall('GET', gen_key)
if current_gen then current_gen = int_field(redis_key(gen_key), nil, current_gen, 0, MAX_INT) end
if r and rcall('EXISTS', ck) == 0 and rcall('ZCARD', index_key) >= max_circuits then too_many('the shared store holds its maximum number of circuits') end
if any and rcall('EXISTS', pol_key) == 0 and rcall('ZCARD', policies_key) >= max_circuits then
  too_many('the shared store holds its maximum number of key policies')
end
uncount(ck)
rcall('DEL', ck, probes_key)
if r then
  rcall('HSET', ck, F_STATE, r.state, F_FC, decimal(r.fc), F_SC, decimal(r.sc), F_LFT, decimal(r.lft),
        F_LSC, decimal(r.lsc), F_GEN, decimal(r.gen))
  count(r.state, 1)
  if r.ps then
    rcall('HSET', ck, F_PS, r.ps, F_PU, decimal(r.pu), F_PR, r.pr, F_PUID, decimal(r.puid),
          F_PPID, decimal(r.ppid))
    count(COUNT_PINNED, 1)
    if r.pu ~= 0 then rcall('ZADD', deadlines_key, r.pu, key) end
  end
  rcall('ZADD', index_key, 0, key)
  -- Generations stay unique: the counter moves past the imported one
  -- (both are at most MAX_INT, so INCR keeps working up to there).
  if (current_gen or 0) < r.gen then rcall('SET', gen_key, decimal(r.gen)) end
else
  rcall('ZREM', index_key, key)
end
rcall('DEL', pol_key)
for f = 1, POLICY_FIELD_COUNT do
  if o[f] then rcall('HSET', pol_key, POLICY_FIELDS[f], decimal(o[f])) end
end
if any then rcall('ZADD', policies_key, 0, key) else rcall('ZREM', policies_key, key) end
return {ST_OK}
)lua";

// Applies what time alone decides to circuits nobody touches: every cbd
// runs it every 100 ms (as the memory store's timer); at most
// SWEEP_PER_CALL keys a run. A circuit holding a bad value leaves the
// deadlines (its error is answered, naming it) so that it cannot stop the
// sweep of the others. Answers {ST_OK, keys settled, circuits in the index,
// closed, open, half-open, pinned, the first error or ''}.
constexpr std::string_view kSweep = R"lua(
local due = rcall('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, SWEEP_PER_CALL)
local first_error = ''
for _, k in ipairs(due) do
  key = k; ck = pfx .. K_CIRCUIT .. k; probes_key = pfx .. K_PROBES .. k; pol_key = pfx .. K_POLICY .. k
  tr = nil; changed = false; c = nil
  local ok, e = pcall(function()
    if not load(false) then
      rcall('ZREM', deadlines_key, k)
      return
    end
    settle()
    save()
    local next_at = nil
    local first = rcall('ZRANGE', probes_key, 0, 0, 'WITHSCORES')
    if first[2] then next_at = tonumber(first[2]) end
    if c.ps and c.pu ~= 0 and (not next_at or c.pu < next_at) then next_at = c.pu end
    if next_at then rcall('ZADD', deadlines_key, next_at, k) else rcall('ZREM', deadlines_key, k) end
  end)
  if not ok then
    redis.pcall('ZREM', deadlines_key, k)
    if first_error == '' then first_error = type(e) == 'table' and e.err or tostring(e) end
  end
end
local counts = redis.pcall('HMGET', counts_key, CLOSED, OPEN, HALF_OPEN, COUNT_PINNED)
if type(counts) ~= 'table' or counts.err then counts = {} end
local out = {ST_OK, #due, rcall('ZCARD', index_key)}
for f = 1, 4 do out[#out + 1] = counts[f] or 0 end
out[#out + 1] = first_error
return out
)lua";

constexpr std::array<std::string_view, kRedisScriptCount> kBodies = {
    kGet, kSuccess, kFailure, kTransition, kReset, kAcquire, kReport,
    kForce, kUnforce, kPolicy, kList, kSweep, kExport, kImport,
};

} // namespace

const std::string& redis_script_constants() {
    static const std::string constants = build_constants();
    return constants;
}

std::string_view redis_script_prelude() { return kPrelude; }

std::string_view redis_script_body(RedisScript script) {
    return kBodies[static_cast<std::size_t>(script)];
}

const std::string& redis_script_source(RedisScript script) {
    static const std::array<std::string, kRedisScriptCount> sources = [] {
        std::array<std::string, kRedisScriptCount> s;
        for (std::size_t i = 0; i < kRedisScriptCount; ++i)
            s[i] = redis_script_constants() + std::string(kPrelude) + std::string(kBodies[i]);
        return s;
    }();
    return sources[static_cast<std::size_t>(script)];
}

std::array<std::string, 6> redis_script_keys(std::string_view prefix, std::string_view key) {
    const std::string p(prefix);
    const std::string k(key);
    return {p + std::string(kRedisCircuitPart) + k, p + std::string(kRedisProbesPart) + k,
            p + std::string(kRedisGenerationKey), p + std::string(kRedisPolicyPart) + k,
            p + std::string(kRedisEventsKey), p + std::string(kRedisIndexKey)};
}

RedisErrorKind classify_redis_error(std::string_view reply) {
    const auto word = reply.substr(0, reply.find(' '));
    if (word == "NOSCRIPT")
        return RedisErrorKind::NoScript;
    if (word == kRedisErrTooMany)
        return RedisErrorKind::TooMany;
    if (word == kRedisErrBackend || word == "WRONGTYPE" || word == "ERR")
        return RedisErrorKind::Data;
    // Redis's states that pass: loading a dataset, a busy script, a replica
    // that is read-only or lost its master, memory or disk trouble, ACL or
    // password changes. Anything unknown is treated the same: a failure of
    // the service, not of one key's data.
    return RedisErrorKind::Outage;
}

std::string redis_error_text(std::string_view reply) {
    if (reply.starts_with(kRedisErrBackend) || reply.starts_with(kRedisErrTooMany))
        reply.remove_prefix(reply.find(' ') == std::string_view::npos ? reply.size()
                                                                       : reply.find(' ') + 1);
    // Redis 7 appends where in the script the error was raised.
    if (const auto at = reply.rfind(" script: "); at != std::string_view::npos)
        reply = reply.substr(0, at);
    while (!reply.empty() && (reply.back() == ' ' || reply.back() == '.'))
        reply.remove_suffix(1);
    return std::string(reply);
}

} // namespace cbd
