// The dispatcher: one request line in, one reply line out, no I/O. It parses
// and validates through common/ (once, centrally), then calls the handler for
// the op from a table indexed by Op. Operator actions are audit-logged here
// with the peer's credentials.
#pragma once

#include "common/protocol.hpp"
#include "common/request.hpp"
#include "daemon/circuit_store.hpp"
#include "daemon/peer.hpp"

#include <string>
#include <string_view>

namespace cbd {

class Dispatcher {
  public:
    explicit Dispatcher(CircuitStore& store);

    // Handles one line (without its "\n"). Appends exactly one reply line to
    // `out`, or nothing when the line is blank.
    void handle_line(std::string_view line, const Peer& peer, std::string& out);

  private:
    using Handler = void (Dispatcher::*)(const Request&, const Peer&, std::string&);
    static Handler handler_for(Op op);

    void handle_get(const Request& req, const Peer& peer, std::string& out);
    void handle_success(const Request& req, const Peer& peer, std::string& out);
    void handle_failure(const Request& req, const Peer& peer, std::string& out);
    void handle_transition(const Request& req, const Peer& peer, std::string& out);
    void handle_reset(const Request& req, const Peer& peer, std::string& out);
    void handle_ping(const Request& req, const Peer& peer, std::string& out);
    void handle_acquire(const Request& req, const Peer& peer, std::string& out);
    void handle_report(const Request& req, const Peer& peer, std::string& out);
    void handle_force(const Request& req, const Peer& peer, std::string& out);
    void handle_unforce(const Request& req, const Peer& peer, std::string& out);
    void handle_configure(const Request& req, const Peer& peer, std::string& out);
    void handle_policy(const Request& req, const Peer& peer, std::string& out);

    CircuitStore& store_;
    Request request_; // reused across lines to keep its buffers
};

} // namespace cbd
