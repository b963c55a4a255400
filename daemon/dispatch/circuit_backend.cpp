// OpOutcome and imported_record (see circuit_backend.hpp).
#include "daemon/dispatch/circuit_backend.hpp"

#include <type_traits>

namespace cbd {

std::optional<ErrorCode> OpOutcome::error() const {
    return std::visit(
        [](const auto& r) -> std::optional<ErrorCode> {
            using Result = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<Result, OpFailure>)
                return r.code;
            else if constexpr (requires { r.error; })
                return r.error;
            else
                return std::nullopt;
        },
        result);
}

void OpOutcome::fail(ErrorCode code, std::string_view message) {
    result = OpFailure{code};
    error_message.assign(message);
}

void OpOutcome::fail_unapplied(ErrorCode code, std::string_view message) {
    result = OpFailure{code, true};
    error_message.assign(message);
}

bool OpOutcome::surely_not_applied() const {
    const auto* failure = std::get_if<OpFailure>(&result);
    return failure && failure->surely_not_applied;
}

void OpOutcome::clear() {
    result = std::monostate{};
    error_message.clear();
}

StoredCircuit imported_record(const Request& req) {
    StoredCircuit record;
    record.key = req.key;
    if (req.snapshot) {
        CircuitView v{*req.snapshot, *req.generation, std::nullopt};
        if (const auto& pin = req.forced) {
            Peer by;
            by.uid = static_cast<uid_t>(pin->uid);
            by.pid = static_cast<pid_t>(pin->pid);
            v.forced = ForcePin{pin->state, pin->until, pin->reason, by};
        }
        record.circuit = std::move(v);
    }
    record.policy = req.policy;
    return record;
}

} // namespace cbd
