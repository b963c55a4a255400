// The store interface's shared names (see circuit_store.hpp).
#include "daemon/breaker/circuit_store.hpp"

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
    case TransitionCause::FailureRate:
        return "failure-rate";
    case TransitionCause::SlowCallRate:
        return "slow-call-rate";
    case TransitionCause::Consecutive:
        return "consecutive";
    }
    return "manual";
}

} // namespace cbd
