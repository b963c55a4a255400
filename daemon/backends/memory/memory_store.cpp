// MemoryCircuitStore: the reference semantics (../shared/reference/SEMANTICS.md)
// and the breaker policy on top of them (docs/PROTOCOL.md, "The breaker").
#include "daemon/backends/memory/memory_store.hpp"

#include <algorithm>
#include <cstdio>
#include <iterator>

#include <nlohmann/json.hpp>

namespace cbd {

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

// --- epoch times: cbd's clock inside, the wall clock outside ------------------
//
// Everything the store decides is measured on clock_.now_ms(), which never
// steps (see Clock). Epoch times leave the store with the wall clock's steps
// added, and come in (restore: import, the state file) with them taken off.

namespace {

// A nonzero time moved by `offset`, kept within 1 ... 2^53-1 (0 means
// "none" and stays so).
std::int64_t moved(std::int64_t t, std::int64_t offset) {
    if (t == 0 || offset == 0)
        return t;
    return std::clamp<std::int64_t>(t + offset, 1, kMaxSafeInteger);
}

} // namespace

std::int64_t MemoryCircuitStore::shown(std::int64_t t) const {
    return moved(t, clock_.wall_offset_ms());
}

CircuitView MemoryCircuitStore::view_of(const Circuit& c) const {
    return view_of(c, clock_.wall_offset_ms());
}

CircuitView MemoryCircuitStore::view_of(const Circuit& c, std::int64_t offset) const {
    CircuitView v{c.snapshot, c.generation, std::nullopt};
    if (is_pinned(c))
        v.forced = c.extras->pin;
    if (offset != 0) {
        v.snapshot.last_failure_time = moved(v.snapshot.last_failure_time, offset);
        v.snapshot.last_state_change = moved(v.snapshot.last_state_change, offset);
        if (v.forced)
            v.forced->until = moved(v.forced->until, offset);
    }
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
    TransitionRecord t{c.snapshot.state, to, cause, shown(now), 0};
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
    // A failed probe (reported, or its lease ran out) re-opens for longer
    // each time in a row (see Policy::open_time_ms); closing starts over.
    if (cause == TransitionCause::ProbeFailure || cause == TransitionCause::LeaseExpired) {
        if (!c.extras)
            c.extras = std::make_unique<Extras>();
        c.extras->reopens = std::min(c.extras->reopens + 1, kMaxReopens);
    }
    if (c.extras) {
        c.extras->probes.clear(); // permits belong to the half-open period that ended
        if (to == State::Closed)
            c.extras->reopens = 0;
        // The window and the run judge the period that ended; the next one
        // starts empty.
        c.extras->rule.reset();
    }
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
    TransitionRecord t{c.snapshot.state, c.snapshot.state, cause, shown(now), c.generation};
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
    if (auto it = circuits_.find(key); it != circuits_.end()) {
        // A read-level get creates nothing, but shows what time decided
        // (an expired pin lifted, an expired lease re-opened), as every
        // other operation, list and export do.
        if (it->second.extras)
            settle(it->first, it->second, clock_.now_ms());
        return {std::nullopt, view_of(it->second), std::nullopt};
    }
    CircuitView unknown;
    unknown.snapshot.last_state_change = shown(clock_.now_ms());
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

ResetResult MemoryCircuitStore::reset(std::string_view key) {
    auto it = circuits_.find(key);
    if (it == circuits_.end())
        return {false};
    will_change(key);
    erase_circuit(it);
    if (observer_)
        observer_->on_reset(key, shown(clock_.now_ms()));
    return {true};
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
    // Disabled: every call goes ahead and nothing is decided.
    if (policy.mode() == BreakerMode::Disabled) {
        r.allowed = true;
        r.circuit = view_of(*c);
        r.circuit.window = window_of(*c, policy, now);
        return r;
    }

    if (is_pinned(*c)) {
        const ForcePin& pin = *c->extras->pin;
        r.allowed = pin.state == State::Closed;
        if (!r.allowed)
            r.retry_after_ms = pin.until != 0 ? pin.until - now : policy.reset_timeout_ms();
    } else {
        switch (c->snapshot.state) {
        case State::Closed:
            r.allowed = true;
            break;
        case State::Open: {
            const std::int64_t elapsed = now - c->snapshot.last_state_change;
            const std::int64_t open_time = policy.open_time_ms(reopens_of(*c));
            if (elapsed < open_time) {
                // An imported lastStateChange may lie in the future (up to
                // 2^53-1): the wait is then longer than the open time, but
                // still a number clients can read.
                r.retry_after_ms = std::min(open_time - elapsed, kMaxSafeInteger);
                break;
            }
            // The first caller after the open time moves it to half-open,
            // once; it and the next ones (up to halfOpenMax) get probe
            // permits below.
            r.transition =
                apply_transition(key, *c, State::HalfOpen, TransitionCause::Timeout, now);
            [[fallthrough]];
        }
        case State::HalfOpen: {
            if (!c->extras)
                c->extras = std::make_unique<Extras>();
            auto& probes = c->extras->probes;
            if (static_cast<std::int64_t>(probes.size()) >= policy.half_open_max()) {
                r.retry_after_ms = policy.reset_timeout_ms(); // as the reference answers
                break;
            }
            r.allowed = true;
            r.permit = new_permit();
            probes.push_back(Probe{r.permit, now + policy.probe_lease_ms()});
            add_deadline(now + policy.probe_lease_ms(), key);
            break;
        }
        }
    }
    // Observe: the decision is made and shown, never enforced.
    if (!r.allowed && policy.mode() == BreakerMode::Observe) {
        r.allowed = true;
        r.retry_after_ms = 0;
        r.circuit.would_deny = true;
    }
    trim(*c);
    const bool would_deny = r.circuit.would_deny;
    r.circuit = view_of(*c);
    r.circuit.would_deny = would_deny;
    r.circuit.window = window_of(*c, policy, now);
    return r;
}

ReportResult MemoryCircuitStore::report(std::string_view key, Outcome outcome,
                                        std::optional<std::uint64_t> generation,
                                        std::string_view permit,
                                        std::optional<std::int64_t> duration_ms) {
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
    const Policy policy = policies_.effective(key);
    auto answer = [&] {
        trim(*c);
        r.circuit = view_of(*c);
        r.circuit.window = window_of(*c, policy, now);
        return r;
    };
    // Disabled: nothing is recorded.
    if (policy.mode() == BreakerMode::Disabled)
        return answer();
    if (generation && *generation != c->generation) {
        // The call was decided under an earlier state: a success from before
        // the circuit opened must not close it.
        r.stale = true;
        return answer();
    }
    const bool slow = policy.slow_call_duration_ms() > 0 && duration_ms &&
                      *duration_ms >= policy.slow_call_duration_ms();

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
            // Observe lets calls through without permits; their reports
            // count, but only probes move a half-open circuit.
            if (policy.mode() == BreakerMode::Observe) {
                if (outcome != Outcome::Ignored)
                    record();
                return answer();
            }
            r.error = ErrorCode::NoPermit;
            return answer();
        }
        probes->erase(it);
        if (outcome == Outcome::Ignored)
            return answer(); // the permit is back; nothing counts
        record();
        if (outcome == Outcome::Failure)
            r.transition =
                apply_transition(key, *c, State::Open, TransitionCause::ProbeFailure, now);
        else if (static_cast<std::int64_t>(c->snapshot.success_count) >= policy.success_threshold())
            r.transition =
                apply_transition(key, *c, State::Closed, TransitionCause::ProbeSuccess, now);
    } else if (outcome != Outcome::Ignored) {
        record();
        // Pinned: recorded, nothing moves. Open: a late report, recorded only.
        if (!pinned && c->snapshot.state == State::Closed)
            r.transition = apply_trip_rule(key, *c, policy, outcome, slow, now);
    }
    return answer();
}

std::optional<TransitionRecord>
MemoryCircuitStore::apply_trip_rule(std::string_view key, Circuit& c, const Policy& policy,
                                    Outcome outcome, bool slow, std::int64_t now) {
    const bool failed = outcome == Outcome::Failure;
    switch (policy.trip_rule()) {
    case TripRule::Count:
        if (failed &&
            static_cast<std::int64_t>(c.snapshot.failure_count) >= policy.failure_threshold())
            return apply_transition(key, c, State::Open, TransitionCause::Threshold, now);
        return std::nullopt;
    case TripRule::Consecutive: {
        if (!failed) {
            if (c.extras && c.extras->rule)
                c.extras->rule->run = 0;
            return std::nullopt;
        }
        if (!c.extras)
            c.extras = std::make_unique<Extras>();
        if (!c.extras->rule)
            c.extras->rule = std::make_unique<RuleWindow>();
        auto& run = c.extras->rule->run;
        run = std::min(run + 1, kMaxSafeInteger);
        if (run >= policy.failure_threshold())
            return apply_transition(key, c, State::Open, TransitionCause::Consecutive, now);
        return std::nullopt;
    }
    case TripRule::Rate: {
        if (!c.extras)
            c.extras = std::make_unique<Extras>();
        if (!c.extras->rule)
            c.extras->rule = std::make_unique<RuleWindow>();
        c.extras->rule->add(policy, now, failed, slow);
        const WindowView w = c.extras->rule->totals(policy, now);
        // A count window never holds more calls than its size: its minimum
        // is at most that (as resilience4j judges it).
        const std::int64_t minimum = policy.window_type() == WindowType::Count
                                         ? std::min(policy.minimum_calls(), policy.window_size())
                                         : policy.minimum_calls();
        if (w.calls == 0 || w.calls < minimum)
            return std::nullopt;
        if (w.failures * 100 >= policy.failure_rate_threshold() * w.calls)
            return apply_transition(key, c, State::Open, TransitionCause::FailureRate, now);
        if (policy.slow_call_duration_ms() > 0 &&
            w.slow * 100 >= policy.slow_call_rate_threshold() * w.calls)
            return apply_transition(key, c, State::Open, TransitionCause::SlowCallRate, now);
        return std::nullopt;
    }
    }
    return std::nullopt;
}

std::optional<WindowView> MemoryCircuitStore::window_of(const Circuit& c, const Policy& policy,
                                                        std::int64_t now) {
    if (policy.trip_rule() != TripRule::Rate)
        return std::nullopt;
    if (c.extras && c.extras->rule)
        return c.extras->rule->totals(policy, now);
    return WindowView{};
}

// --- the trip rules' state in the state file ---------------------------------
//
// {"reopens":N,"run":N,"window":{…}} with only what is set; the window as
// RuleWindow::encode() writes it. Read back only through decode_rule(),
// which checks every number.

std::string MemoryCircuitStore::encode_rule(const Circuit& c) {
    if (!c.extras || (c.extras->reopens == 0 && !c.extras->rule))
        return {};
    nlohmann::json j = nlohmann::json::object();
    if (c.extras->reopens != 0)
        j["reopens"] = c.extras->reopens;
    if (c.extras->rule) {
        if (c.extras->rule->run != 0)
            j["run"] = c.extras->rule->run;
        auto window = nlohmann::json::parse(c.extras->rule->encode(), nullptr, false);
        if (!window.is_discarded() && !window.empty())
            j["window"] = std::move(window);
    }
    return j.dump();
}

bool MemoryCircuitStore::decode_rule(std::string_view text, Circuit& c) {
    if (text.empty())
        return true;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return false;
    std::int64_t reopens = 0, run = 0;
    auto read = [&](const char* name, std::int64_t max, std::int64_t& out) {
        auto it = j.find(name);
        if (it == j.end())
            return true;
        if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
            it->get<std::int64_t>() > max)
            return false;
        out = it->get<std::int64_t>();
        return true;
    };
    if (!read("reopens", kMaxReopens, reopens) || !read("run", kMaxSafeInteger, run))
        return false;
    auto rule = std::make_unique<RuleWindow>();
    rule->run = run;
    if (auto it = j.find("window"); it != j.end() && !rule->decode(it->dump()))
        return false;
    if (!c.extras)
        c.extras = std::make_unique<Extras>();
    c.extras->reopens = reopens;
    c.extras->rule = std::move(rule);
    trim(c);
    return true;
}

std::string MemoryCircuitStore::RuleWindow::encode() const {
    if (size_ == 0 || (calls_ == 0 && !any_bucket()))
        return "{}";
    nlohmann::json j = {{"type", kWindowTypeNames[static_cast<std::size_t>(type_)]},
                        {"size", size_}};
    if (type_ == WindowType::Count) {
        std::string ring;
        for (std::int64_t i = 0; i < calls_; ++i)
            ring += static_cast<char>(
                '0' + ring_[static_cast<std::size_t>((head_ - calls_ + i + size_) % size_)]);
        j["calls"] = ring; // oldest first
    } else {
        auto buckets = nlohmann::json::array();
        for (const Bucket& b : buckets_)
            if (b.index >= 0)
                buckets.push_back({b.index, b.calls, b.failures, b.slow});
        j["buckets"] = std::move(buckets);
    }
    return j.dump();
}

bool MemoryCircuitStore::RuleWindow::decode(std::string_view text) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return false;
    if (j.empty())
        return true;
    auto type = j.find("type");
    auto size = j.find("size");
    if (type == j.end() || size == j.end() || !type->is_string() || !size->is_number_integer())
        return false;
    const auto z = size->get<std::int64_t>();
    if (*type == "count") {
        auto calls = j.find("calls");
        if (z < 1 || z > kMaxCountWindow || calls == j.end() || !calls->is_string())
            return false;
        const auto& codes = calls->get_ref<const std::string&>();
        if (static_cast<std::int64_t>(codes.size()) > z)
            return false;
        type_ = WindowType::Count;
        size_ = z;
        ring_.assign(static_cast<std::size_t>(z), 0);
        calls_ = failures_ = slow_ = 0;
        for (char ch : codes) {
            if (ch < '0' || ch > '3')
                return false;
            const auto code = static_cast<std::uint8_t>(ch - '0');
            ring_[static_cast<std::size_t>(calls_++)] = code;
            failures_ += (code & kFailedBit) ? 1 : 0;
            slow_ += (code & kSlowBit) ? 1 : 0;
        }
        head_ = calls_ % z;
        return true;
    }
    auto buckets = j.find("buckets");
    if (*type != "time" || z < 1 || z > kMaxTimeWindowMs || buckets == j.end() ||
        !buckets->is_array() || buckets->size() > static_cast<std::size_t>(kTimeWindowBuckets))
        return false;
    type_ = WindowType::Time;
    size_ = z;
    buckets_ = {};
    for (const auto& b : *buckets) {
        if (!b.is_array() || b.size() != 4)
            return false;
        std::array<std::int64_t, 4> n{};
        for (std::size_t i = 0; i < 4; ++i) {
            if (!b[i].is_number_integer())
                return false;
            n[i] = b[i].get<std::int64_t>();
            if (n[i] < 0 || n[i] > (i == 0 ? kMaxSafeInteger : kMaxWindowBucketCount))
                return false;
        }
        buckets_[static_cast<std::size_t>(n[0] % kTimeWindowBuckets)] =
            Bucket{n[0], n[1], n[2], n[3]};
    }
    return true;
}

// --- the rate rule's window ---------------------------------------------------

namespace {

// A time window's bucket length: a tenth of the window, at least 1 ms.
std::int64_t bucket_ms(std::int64_t window_ms) {
    return std::max<std::int64_t>(1, (window_ms + kTimeWindowBuckets - 1) / kTimeWindowBuckets);
}

} // namespace

void MemoryCircuitStore::RuleWindow::reshape(const Policy& policy) {
    if (type_ == policy.window_type() && size_ == policy.window_size())
        return;
    type_ = policy.window_type();
    size_ = policy.window_size();
    ring_.clear();
    ring_.shrink_to_fit();
    head_ = calls_ = failures_ = slow_ = 0;
    buckets_ = {};
}

bool MemoryCircuitStore::RuleWindow::any_bucket() const {
    return std::any_of(buckets_.begin(), buckets_.end(),
                       [](const Bucket& b) { return b.index >= 0; });
}

void MemoryCircuitStore::RuleWindow::add(const Policy& policy, std::int64_t now, bool failed,
                                         bool slow) {
    reshape(policy);
    if (type_ == WindowType::Count) {
        if (ring_.empty())
            ring_.assign(static_cast<std::size_t>(size_), 0);
        auto& slot = ring_[static_cast<std::size_t>(head_)];
        if (calls_ == size_) { // full: the oldest call leaves
            failures_ -= (slot & kFailedBit) ? 1 : 0;
            slow_ -= (slot & kSlowBit) ? 1 : 0;
        } else {
            calls_ += 1;
        }
        slot = static_cast<std::uint8_t>((failed ? kFailedBit : 0) | (slow ? kSlowBit : 0));
        failures_ += failed ? 1 : 0;
        slow_ += slow ? 1 : 0;
        head_ = (head_ + 1) % size_;
        return;
    }
    const std::int64_t index = now / bucket_ms(size_);
    Bucket& b = buckets_[static_cast<std::size_t>(index % kTimeWindowBuckets)];
    if (b.index != index)
        b = Bucket{index, 0, 0, 0};
    auto bump = [](std::int64_t& n) { n = std::min(n + 1, kMaxWindowBucketCount); };
    bump(b.calls);
    if (failed)
        bump(b.failures);
    if (slow)
        bump(b.slow);
}

WindowView MemoryCircuitStore::RuleWindow::totals(const Policy& policy, std::int64_t now) const {
    if (type_ != policy.window_type() || size_ != policy.window_size())
        return {}; // built for another shape: the next call starts it over
    if (type_ == WindowType::Count)
        return window_view(calls_, failures_, slow_);
    std::int64_t calls = 0, failures = 0, slow = 0;
    const std::int64_t current = now / bucket_ms(size_);
    for (const Bucket& b : buckets_)
        if (b.index >= 0 && b.index > current - kTimeWindowBuckets && b.index <= current) {
            calls += b.calls;
            failures += b.failures;
            slow += b.slow;
        }
    return window_view(calls, failures, slow);
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
    // Fields that hold only together are judged on the policy the key would
    // have, whichever layer set each.
    if (auto problem = policy_combination_problem(policies_.resolve_with(key, &next).policy))
        return {ErrorCode::InvalidRequest, {}, *problem};
    if (!next.empty() && !policies_.key_override(key) &&
        policies_.override_count() >= max_circuits_)
        return {ErrorCode::TooManyCircuits, {}, {}};
    will_change(key);
    policies_.set_key_override(key, next);
    return {std::nullopt, policies_.resolve(key), {}};
}

PolicyResult MemoryCircuitStore::policy(std::string_view key) {
    return {std::nullopt, policies_.resolve(key), {}};
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
    const std::int64_t wall_offset = clock_.wall_offset_ms(); // once per page, not per circuit
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
            // Full: is there another match? Then the page has a next. What
            // is examined is settled first, matching or not (as on Redis).
            auto& c = circuits_.find(key)->second;
            if (c.extras)
                settle(key, c, now);
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
        page.circuits.push_back(ListEntry{key, view_of(c, wall_offset)});
        // Only circuits holding trip-rule state can have a window worth
        // showing (per-circuit metrics), so only they pay for the policy.
        if (c.extras && c.extras->rule)
            page.circuits.back().circuit.window = window_of(c, policies_.effective(key), now);
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
    if (auto it = circuits_.find(key); it != circuits_.end()) {
        record.circuit = view_of(it->second);
        record.rule = encode_rule(it->second);
    }
    if (const PolicyPatch* own = policies_.key_override(key))
        record.policy = *own;
    return record;
}

bool MemoryCircuitStore::in_range(const StoredCircuit& record) {
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        const auto& value = record.policy.values[i];
        if (value && (*value < kPolicyFieldSpecs[i].min || *value > kPolicyFieldSpecs[i].max))
            return false;
    }
    if (!record.circuit)
        return record.rule.empty();
    Circuit scratch;
    if (!decode_rule(record.rule, scratch))
        return false;
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
        // Epoch times as the wall clock has them, back to cbd's clock.
        const std::int64_t offset = -clock_.wall_offset_ms();
        c.snapshot = v.snapshot;
        c.snapshot.last_failure_time = moved(v.snapshot.last_failure_time, offset);
        c.snapshot.last_state_change = moved(v.snapshot.last_state_change, offset);
        c.generation = v.generation;
        c.extras.reset();            // probes in flight do not survive a restore
        decode_rule(record.rule, c); // checked by in_range()
        if (v.forced) {
            if (!c.extras)
                c.extras = std::make_unique<Extras>();
            c.extras->pin = v.forced;
            c.extras->pin->until = moved(v.forced->until, offset);
            pinned_ += 1;
            if (c.extras->pin->until != 0)
                add_deadline(c.extras->pin->until, record.key);
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
    // Two sorted sources (circuits, policy overrides), each read up to one
    // key past `limit`, merged: the merge's first limit + 1 keys are right,
    // and a key past `limit` means there is a next page (a full page that
    // ends at the last key has none, as in `list`).
    const std::size_t want = limit + 1;
    std::vector<std::string> circuit_keys;
    const bool from_after = !after.empty() && after >= prefix;
    ordered_keys_.walk_from(from_after ? after : prefix, from_after, [&](const std::string& key) {
        if (!key.starts_with(prefix) || circuit_keys.size() == want)
            return false;
        circuit_keys.push_back(key);
        return true;
    });
    const auto policy_keys = policies_.override_keys(prefix, after, want);
    std::vector<std::string> keys;
    std::set_union(circuit_keys.begin(), circuit_keys.end(), policy_keys.begin(), policy_keys.end(),
                   std::back_inserter(keys));
    const bool more = keys.size() > limit;
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
