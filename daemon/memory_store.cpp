// MemoryCircuitStore: the reference semantics (../shared/reference/SEMANTICS.md)
// and the breaker policy on top of them (docs/PROTOCOL.md, "The breaker").
#include "daemon/memory_store.hpp"

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace cbd {

std::string_view transition_cause_name(TransitionCause cause) {
    switch (cause) {
    case TransitionCause::Manual:
        return "manual";
    case TransitionCause::Threshold:
        return "threshold";
    case TransitionCause::Timeout:
        return "timeout";
    case TransitionCause::ProbeSuccess:
        return "probe-success";
    case TransitionCause::ProbeFailure:
        return "probe-failure";
    case TransitionCause::LeaseExpired:
        return "lease-expired";
    case TransitionCause::Force:
        return "force";
    case TransitionCause::Unforce:
        return "unforce";
    case TransitionCause::ForceExpired:
        return "force-expired";
    }
    return "manual";
}

MemoryCircuitStore::MemoryCircuitStore(const Clock& clock, std::size_t max_circuits,
                                       CircuitObserver* observer)
    : clock_(clock), max_circuits_(max_circuits), observer_(observer),
      permit_rng_(std::random_device{}()) {}

MemoryCircuitStore::Circuit* MemoryCircuitStore::find_or_create(std::string_view key,
                                                                std::int64_t now) {
    if (auto it = circuits_.find(key); it != circuits_.end()) {
        if (it->second.extras)
            settle(it->first, it->second, now);
        return &it->second;
    }
    if (circuits_.size() >= max_circuits_)
        return nullptr;
    will_change(key);
    Circuit fresh;
    fresh.snapshot.last_state_change = now;
    fresh.generation = ++last_generation_;
    auto it = circuits_.emplace(std::string(key), std::move(fresh)).first;
    ordered_keys_.insert(&it->first);
    by_state_[static_cast<std::size_t>(State::Closed)] += 1;
    return &it->second;
}

CircuitView MemoryCircuitStore::view_of(const Circuit& c) const {
    CircuitView v{c.snapshot, c.generation, std::nullopt};
    if (is_pinned(c))
        v.forced = c.extras->pin;
    return v;
}

void MemoryCircuitStore::settle(std::string_view key, Circuit& c, std::int64_t now) {
    // With no generations left nothing can change (see kMaxGeneration); the
    // operations check first, so only expire_due(), list and export get here.
    if (!generations_left(2))
        return;
    Extras& x = *c.extras;
    if (x.pin && x.pin->until != 0 && now >= x.pin->until)
        lift_pin(key, c, TransitionCause::ForceExpired, now);
    // Probes exist only in half-open (any transition clears them), so one
    // expired lease re-opens the circuit and ends the others too.
    const bool lease_expired = std::any_of(x.probes.begin(), x.probes.end(),
                                           [&](const Probe& p) { return p.expires_at <= now; });
    if (lease_expired) {
        will_change(key);
        count_one(c.snapshot.failure_count);
        c.snapshot.last_failure_time = now;
        apply_transition(key, c, State::Open, TransitionCause::LeaseExpired, now);
    }
    if (c.extras && c.extras->empty())
        c.extras.reset();
}

TransitionRecord MemoryCircuitStore::apply_transition(std::string_view key, Circuit& c, State to,
                                                      TransitionCause cause, std::int64_t now) {
    will_change(key);
    TransitionRecord t{c.snapshot.state, to, cause, now, 0};
    by_state_[static_cast<std::size_t>(c.snapshot.state)] -= 1;
    by_state_[static_cast<std::size_t>(to)] += 1;
    c.snapshot.state = to;
    c.snapshot.last_state_change = now;
    switch (to) {
    case State::Closed:
        c.snapshot.failure_count = 0;
        c.snapshot.success_count = 0;
        break;
    case State::HalfOpen:
        c.snapshot.success_count = 0;
        break;
    case State::Open:
        break; // counts are kept, as the reference does
    }
    c.generation = ++last_generation_;
    t.generation = c.generation;
    if (c.extras)
        c.extras->probes.clear(); // permits belong to the half-open period that ended
    if (observer_)
        observer_->on_transition(key, t, view_of(c));
    return t;
}

TransitionRecord MemoryCircuitStore::lift_pin(std::string_view key, Circuit& c,
                                              TransitionCause cause, std::int64_t now) {
    will_change(key);
    c.extras->pin.reset();
    pinned_ -= 1;
    c.generation = ++last_generation_;
    TransitionRecord t{c.snapshot.state, c.snapshot.state, cause, now, c.generation};
    if (observer_)
        observer_->on_transition(key, t, view_of(c));
    return t;
}

std::string MemoryCircuitStore::new_permit() {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(permit_rng_()));
    return buf;
}

void MemoryCircuitStore::erase_circuit(Map::iterator it) {
    by_state_[static_cast<std::size_t>(it->second.snapshot.state)] -= 1;
    if (is_pinned(it->second))
        pinned_ -= 1;
    ordered_keys_.erase(it->first);
    circuits_.erase(it);
}

void MemoryCircuitStore::add_deadline(std::int64_t at, std::string_view key) {
    deadlines_.emplace(at, std::string(key));
}

// --- the reference store ----------------------------------------------------

StoreResult MemoryCircuitStore::get(std::string_view key) {
    if (!generations_left(kGenerationsPerOperation)) {
        // A read of a circuit that exists needs no generation (nothing is
        // settled: time no longer changes circuits here); creating one does.
        auto it = circuits_.find(key);
        if (it == circuits_.end())
            return {ErrorCode::BackendError, {}, std::nullopt};
        return {std::nullopt, view_of(it->second), std::nullopt};
    }
    Circuit* c = find_or_create(key, clock_.now_ms());
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    return {std::nullopt, view_of(*c), std::nullopt};
}

StoreResult MemoryCircuitStore::peek(std::string_view key) {
    if (auto it = circuits_.find(key); it != circuits_.end())
        return {std::nullopt, view_of(it->second), std::nullopt};
    CircuitView unknown;
    unknown.snapshot.last_state_change = clock_.now_ms();
    return {std::nullopt, unknown, std::nullopt};
}

StoreResult MemoryCircuitStore::record_success(std::string_view key) {
    if (!generations_left(kGenerationsPerOperation))
        return {ErrorCode::BackendError, {}, std::nullopt};
    Circuit* c = find_or_create(key, clock_.now_ms());
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    will_change(key);
    count_one(c->snapshot.success_count);
    return {std::nullopt, view_of(*c), std::nullopt};
}

StoreResult MemoryCircuitStore::record_failure(std::string_view key) {
    if (!generations_left(kGenerationsPerOperation))
        return {ErrorCode::BackendError, {}, std::nullopt};
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    will_change(key);
    count_one(c->snapshot.failure_count);
    c->snapshot.last_failure_time = now;
    return {std::nullopt, view_of(*c), std::nullopt};
}

StoreResult MemoryCircuitStore::transition(std::string_view key, State to,
                                           const TransitionCondition& condition) {
    if (!generations_left(kGenerationsPerOperation))
        return {ErrorCode::BackendError, {}, std::nullopt};
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    if ((condition.expect && *condition.expect != c->snapshot.state) ||
        (condition.expect_generation && *condition.expect_generation != c->generation))
        return {ErrorCode::Conflict, view_of(*c), std::nullopt};
    if (is_pinned(*c))
        return {ErrorCode::Forced, view_of(*c), std::nullopt};
    auto t = apply_transition(key, *c, to, TransitionCause::Manual, now);
    return {std::nullopt, view_of(*c), t};
}

bool MemoryCircuitStore::reset(std::string_view key) {
    auto it = circuits_.find(key);
    if (it == circuits_.end())
        return false;
    will_change(key);
    erase_circuit(it);
    if (observer_)
        observer_->on_reset(key, clock_.now_ms());
    return true;
}

// --- the breaker --------------------------------------------------------------

AcquireResult MemoryCircuitStore::acquire(std::string_view key) {
    AcquireResult r;
    if (!generations_left(kGenerationsPerOperation)) {
        r.error = ErrorCode::BackendError;
        return r;
    }
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c) {
        r.error = ErrorCode::TooManyCircuits;
        return r;
    }
    const Policy policy = policies_.effective(key);

    if (is_pinned(*c)) {
        const ForcePin& pin = *c->extras->pin;
        r.allowed = pin.state == State::Closed;
        if (!r.allowed)
            r.retry_after_ms = pin.until != 0 ? pin.until - now : policy.reset_timeout_ms;
        r.circuit = view_of(*c);
        return r;
    }

    switch (c->snapshot.state) {
    case State::Closed:
        r.allowed = true;
        break;
    case State::Open: {
        const std::int64_t elapsed = now - c->snapshot.last_state_change;
        if (elapsed < policy.reset_timeout_ms) {
            // An imported lastStateChange may lie in the future (up to
            // 2^53-1): the wait is then longer than the timeout, but still
            // a number clients can read.
            r.retry_after_ms = std::min(policy.reset_timeout_ms - elapsed, kMaxSafeInteger);
            break;
        }
        // The first caller after the timeout moves it to half-open, once; it
        // and the next ones (up to halfOpenMax) get probe permits below.
        r.transition = apply_transition(key, *c, State::HalfOpen, TransitionCause::Timeout, now);
        [[fallthrough]];
    }
    case State::HalfOpen: {
        if (!c->extras)
            c->extras = std::make_unique<Extras>();
        auto& probes = c->extras->probes;
        if (static_cast<std::int64_t>(probes.size()) >= policy.half_open_max) {
            r.retry_after_ms = policy.reset_timeout_ms; // as the reference answers
            break;
        }
        r.allowed = true;
        r.permit = new_permit();
        probes.push_back(Probe{r.permit, now + policy.probe_lease_ms});
        add_deadline(now + policy.probe_lease_ms, key);
        break;
    }
    }
    if (c->extras && c->extras->empty())
        c->extras.reset();
    r.circuit = view_of(*c);
    return r;
}

ReportResult MemoryCircuitStore::report(std::string_view key, Outcome outcome,
                                        std::optional<std::uint64_t> generation,
                                        std::string_view permit) {
    ReportResult r;
    if (!generations_left(kGenerationsPerOperation)) {
        r.error = ErrorCode::BackendError;
        return r;
    }
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c) {
        r.error = ErrorCode::TooManyCircuits;
        return r;
    }
    if (generation && *generation != c->generation) {
        // The call was decided under an earlier state: a success from before
        // the circuit opened must not close it.
        r.stale = true;
        r.circuit = view_of(*c);
        return r;
    }

    auto record = [&] {
        will_change(key);
        if (outcome == Outcome::Failure) {
            count_one(c->snapshot.failure_count);
            c->snapshot.last_failure_time = now;
        } else {
            count_one(c->snapshot.success_count);
        }
    };

    const bool pinned = is_pinned(*c);
    if (!pinned && c->snapshot.state == State::HalfOpen) {
        auto* probes = c->extras ? &c->extras->probes : nullptr;
        auto it = probes ? std::find_if(probes->begin(), probes->end(),
                                        [&](const Probe& p) { return p.permit == permit; })
                         : decltype(probes->begin()){};
        if (permit.empty() || !probes || it == probes->end()) {
            r.error = ErrorCode::NoPermit;
            r.circuit = view_of(*c);
            return r;
        }
        probes->erase(it);
        record();
        const Policy policy = policies_.effective(key);
        if (outcome == Outcome::Failure)
            r.transition =
                apply_transition(key, *c, State::Open, TransitionCause::ProbeFailure, now);
        else if (static_cast<std::int64_t>(c->snapshot.success_count) >= policy.success_threshold)
            r.transition =
                apply_transition(key, *c, State::Closed, TransitionCause::ProbeSuccess, now);
    } else {
        record();
        // Pinned: recorded, nothing moves. Open: a late report, recorded only.
        if (!pinned && c->snapshot.state == State::Closed && outcome == Outcome::Failure) {
            const Policy policy = policies_.effective(key);
            if (static_cast<std::int64_t>(c->snapshot.failure_count) >= policy.failure_threshold)
                r.transition =
                    apply_transition(key, *c, State::Open, TransitionCause::Threshold, now);
        }
    }
    if (c->extras && c->extras->empty())
        c->extras.reset();
    r.circuit = view_of(*c);
    return r;
}

StoreResult MemoryCircuitStore::force(std::string_view key, State state, std::int64_t ttl_ms,
                                      std::string reason, const Peer& by) {
    if (!generations_left(kGenerationsPerOperation))
        return {ErrorCode::BackendError, {}, std::nullopt};
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    will_change(key);
    if (!c->extras)
        c->extras = std::make_unique<Extras>();
    if (!c->extras->pin)
        pinned_ += 1;
    c->extras->pin = ForcePin{state, ttl_ms > 0 ? now + ttl_ms : 0, std::move(reason), by};
    if (ttl_ms > 0)
        add_deadline(now + ttl_ms, key);
    auto t = apply_transition(key, *c, state, TransitionCause::Force, now);
    return {std::nullopt, view_of(*c), t};
}

StoreResult MemoryCircuitStore::unforce(std::string_view key) {
    if (!generations_left(kGenerationsPerOperation))
        return {ErrorCode::BackendError, {}, std::nullopt};
    const std::int64_t now = clock_.now_ms();
    Circuit* c = find_or_create(key, now);
    if (!c)
        return {ErrorCode::TooManyCircuits, {}, std::nullopt};
    if (!is_pinned(*c))
        return {std::nullopt, view_of(*c), std::nullopt};
    auto t = lift_pin(key, *c, TransitionCause::Unforce, now);
    if (c->extras->empty())
        c->extras.reset();
    return {std::nullopt, view_of(*c), t};
}

// --- policies -----------------------------------------------------------------

PolicyResult MemoryCircuitStore::configure(std::string_view key, const PolicyPatch& patch,
                                           const PolicyPatch& removed, bool clear) {
    PolicyPatch next;
    if (!clear)
        if (const PolicyPatch* current = policies_.key_override(key))
            next = *current;
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        if (removed.values[i])
            next.values[i].reset();
    next.merge(patch);
    if (!next.empty() && !policies_.key_override(key) &&
        policies_.override_count() >= max_circuits_)
        return {ErrorCode::TooManyCircuits, {}};
    will_change(key);
    policies_.set_key_override(key, next);
    return {std::nullopt, policies_.resolve(key)};
}

PolicyResult MemoryCircuitStore::policy(std::string_view key) {
    return {std::nullopt, policies_.resolve(key)};
}

void MemoryCircuitStore::set_policy_config(PolicyConfig config) {
    policies_.set_config(std::move(config));
}

std::int64_t MemoryCircuitStore::expire_due() {
    const std::int64_t now = clock_.now_ms();
    while (!deadlines_.empty() && deadlines_.top().first <= now) {
        const std::string key = deadlines_.top().second;
        deadlines_.pop();
        auto it = circuits_.find(key);
        if (it != circuits_.end() && it->second.extras)
            settle(it->first, it->second, now);
    }
    return deadlines_.empty() ? 0 : deadlines_.top().first;
}

} // namespace cbd

namespace cbd {

ListPage MemoryCircuitStore::list(const ListQuery& query) {
    const std::int64_t now = clock_.now_ms();
    ListPage page;
    // Start at the later of `after` (exclusive) and `prefix` (inclusive).
    const bool from_after = !query.after.empty() && query.after >= query.prefix;
    const std::string_view from = from_after ? query.after : query.prefix;
    std::size_t examined = 0;
    std::string last_examined;
    bool more = false;
    ordered_keys_.walk_from(from, from_after, [&](const std::string& key) {
        if (!key.starts_with(query.prefix))
            return false; // keys are in order: past the prefix range, done
        if (page.circuits.size() == query.limit) {
            // Full: is there another match? Then the page has a next.
            auto& c = circuits_.find(key)->second;
            if (!query.state || c.snapshot.state == *query.state) {
                more = true;
                return false;
            }
        }
        if (++examined > kMaxListScan) {
            more = true;
            return false;
        }
        last_examined = key;
        if (page.circuits.size() == query.limit)
            return true;
        auto& c = circuits_.find(key)->second;
        if (c.extras)
            settle(key, c, now);
        if (query.state && c.snapshot.state != *query.state)
            return true;
        page.circuits.push_back(ListEntry{key, view_of(c)});
        return true;
    });
    if (more)
        page.next = page.circuits.size() == query.limit ? page.circuits.back().key : last_examined;
    return page;
}

CircuitCounts MemoryCircuitStore::counts() const {
    return CircuitCounts{circuits_.size(), by_state_[static_cast<std::size_t>(State::Closed)],
                         by_state_[static_cast<std::size_t>(State::Open)],
                         by_state_[static_cast<std::size_t>(State::HalfOpen)], pinned_};
}

// --- persistence, export, import ----------------------------------------------

StoredCircuit MemoryCircuitStore::stored(std::string_view key) const {
    StoredCircuit record;
    record.key = key;
    if (auto it = circuits_.find(key); it != circuits_.end())
        record.circuit = view_of(it->second);
    if (const PolicyPatch* own = policies_.key_override(key))
        record.policy = *own;
    return record;
}

bool MemoryCircuitStore::in_range(const StoredCircuit& record) {
    for (const auto& value : record.policy.values)
        if (value && (*value < 1 || *value > kMaxPolicyValue))
            return false;
    if (!record.circuit)
        return true;
    const CircuitView& v = *record.circuit;
    const auto max = static_cast<std::uint64_t>(kMaxSafeInteger);
    const auto time_ok = [](std::int64_t t) { return t >= 0 && t <= kMaxSafeInteger; };
    return v.generation <= kMaxGeneration && v.snapshot.failure_count <= max &&
           v.snapshot.success_count <= max && time_ok(v.snapshot.last_failure_time) &&
           time_ok(v.snapshot.last_state_change) && (!v.forced || time_ok(v.forced->until));
}

std::optional<ErrorCode> MemoryCircuitStore::restore(const StoredCircuit& record) {
    // The protocol and the state file check these numbers already; this is
    // the last door, so a caller that did not cannot push the generation
    // counter past kMaxGeneration or store what clients cannot read.
    if (!in_range(record))
        return ErrorCode::InvalidRequest;
    auto it = circuits_.find(record.key);
    // Check both limits before changing anything: a restore is all or nothing.
    if (record.circuit && it == circuits_.end() && circuits_.size() >= max_circuits_)
        return ErrorCode::TooManyCircuits;
    if (!record.policy.empty() && !policies_.key_override(record.key) &&
        policies_.override_count() >= max_circuits_)
        return ErrorCode::TooManyCircuits;
    will_change(record.key);

    if (!record.circuit) {
        if (it != circuits_.end())
            erase_circuit(it);
    } else {
        if (it == circuits_.end()) {
            it = circuits_.emplace(record.key, Circuit{}).first;
            ordered_keys_.insert(&it->first);
        } else {
            by_state_[static_cast<std::size_t>(it->second.snapshot.state)] -= 1;
            if (is_pinned(it->second))
                pinned_ -= 1;
        }
        Circuit& c = it->second;
        const CircuitView& v = *record.circuit;
        c.snapshot = v.snapshot;
        c.generation = v.generation;
        c.extras.reset(); // probes in flight do not survive a restore
        if (v.forced) {
            c.extras = std::make_unique<Extras>();
            c.extras->pin = v.forced;
            pinned_ += 1;
            if (v.forced->until != 0)
                add_deadline(v.forced->until, record.key);
        }
        by_state_[static_cast<std::size_t>(c.snapshot.state)] += 1;
        advance_generation(v.generation);
    }
    policies_.set_key_override(record.key, record.policy);
    return std::nullopt;
}

void MemoryCircuitStore::start_over() {
    for (const auto& key : policies_.override_keys("", "", policies_.override_count()))
        policies_.set_key_override(key, PolicyPatch{});
    ordered_keys_ = KeyIndex{};
    circuits_.clear();
    by_state_ = {};
    pinned_ = 0;
    last_generation_ = 0;
    deadlines_ = {};
}

ExportPage MemoryCircuitStore::export_page(std::string_view prefix, std::string_view after,
                                           std::size_t limit) {
    const std::int64_t now = clock_.now_ms();
    // Two sorted sources (circuits, policy overrides), each read up to
    // `limit` keys, merged; either one full means there may be more.
    std::vector<std::string> circuit_keys;
    const bool from_after = !after.empty() && after >= prefix;
    ordered_keys_.walk_from(from_after ? after : prefix, from_after, [&](const std::string& key) {
        if (!key.starts_with(prefix) || circuit_keys.size() == limit)
            return false;
        circuit_keys.push_back(key);
        return true;
    });
    const auto policy_keys = policies_.override_keys(prefix, after, limit);
    std::vector<std::string> keys;
    std::set_union(circuit_keys.begin(), circuit_keys.end(), policy_keys.begin(),
                   policy_keys.end(), std::back_inserter(keys));
    const bool more =
        circuit_keys.size() == limit || policy_keys.size() == limit || keys.size() > limit;
    if (keys.size() > limit)
        keys.resize(limit);

    ExportPage page;
    page.circuits.reserve(keys.size());
    for (const auto& key : keys) {
        if (auto it = circuits_.find(key); it != circuits_.end() && it->second.extras)
            settle(it->first, it->second, now);
        page.circuits.push_back(stored(key));
    }
    if (more && !keys.empty())
        page.next = keys.back();
    return page;
}

} // namespace cbd
