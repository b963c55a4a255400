// The live sessions of the server (see session.hpp for one of them): who is
// connected, per uid, for the connection limits; stopping them all at
// shutdown; and the turn queue that keeps a flooding connection fair.
#pragma once

#include "daemon/dispatch/stats.hpp"

#include <deque>
#include <functional>
#include <memory>
#include <sys/types.h>
#include <unordered_map>
#include <unordered_set>

namespace cbd {

class Session;

// The live sessions, so shutdown can reach them. It must outlive the
// io_context: a session still queued there when the loop is torn down leaves
// the set from its destructor.
class SessionSet {
  public:
    explicit SessionSet(DaemonStats& stats) : stats_(stats) {}
    ~SessionSet();
    void add(Session* s, uid_t uid);
    void remove(Session* s, uid_t uid);
    std::size_t size() const { return sessions_.size(); }
    std::size_t count_of(uid_t uid) const;

    // Stops every session; `on_empty` runs once the last one has closed (at
    // once if there is none).
    void stop_all(std::function<void()> on_empty);

    // Fairness: a session that spent its turn's budget with requests left
    // waits here for its next turn. Waiting sessions get their turns one at
    // a time, round-robin, each after the loop has looked for I/O again: so
    // a connection that just became ready (a writer's one `failure`) waits
    // for at most one flooder's turn, not for one turn of every flooder.
    void wait_turn(std::shared_ptr<Session> s);

  private:
    void post_next_turn();

    DaemonStats& stats_;
    std::unordered_set<Session*> sessions_;
    std::unordered_map<uid_t, std::size_t> by_uid_; // only uids with a connection
    std::function<void()> on_empty_;
    std::deque<std::shared_ptr<Session>> turns_; // waiting, in order
    bool turn_posted_ = false;
};

} // namespace cbd
