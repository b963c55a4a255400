// SessionSet (see session_set.hpp).
#include "daemon/net/session_set.hpp"

#include "daemon/net/session.hpp"

#include <boost/asio/post.hpp>
#include <utility>
#include <vector>

namespace cbd {

namespace asio = boost::asio;

std::size_t SessionSet::count_of(uid_t uid) const {
    const auto it = by_uid_.find(uid);
    return it == by_uid_.end() ? 0 : it->second;
}

void SessionSet::add(Session* s, uid_t uid) {
    sessions_.insert(s);
    by_uid_[uid] += 1;
    stats_.connections_current = sessions_.size();
    stats_.connections_total += 1;
}

void SessionSet::remove(Session* s, uid_t uid) {
    sessions_.erase(s);
    if (const auto it = by_uid_.find(uid); it != by_uid_.end() && --it->second == 0)
        by_uid_.erase(it);
    stats_.connections_current = sessions_.size();
    if (sessions_.empty() && on_empty_)
        std::exchange(on_empty_, nullptr)();
}

SessionSet::~SessionSet() {
    // A session's destructor leaves this set: let the waiting ones go while
    // the set is still whole.
    auto waiting = std::move(turns_);
    waiting.clear();
}

void SessionSet::wait_turn(std::shared_ptr<Session> s) {
    turns_.push_back(std::move(s));
    if (!turn_posted_)
        post_next_turn();
}

void SessionSet::post_next_turn() {
    // One turn per post: the next post goes behind the I/O the loop finds in
    // between, so a connection that just became ready goes first.
    turn_posted_ = true;
    asio::post(turns_.front()->socket_.get_executor(), [this] {
        turn_posted_ = false;
        if (turns_.empty())
            return;
        std::shared_ptr<Session> s = std::move(turns_.front());
        turns_.pop_front();
        s->take_turn();
        if (!turns_.empty() && !turn_posted_)
            post_next_turn();
    });
}

void SessionSet::stop_all(std::function<void()> on_empty) {
    if (sessions_.empty()) {
        on_empty();
        return;
    }
    on_empty_ = std::move(on_empty);
    // stop() may end a session and so edit the set: iterate a copy.
    std::vector<Session*> live(sessions_.begin(), sessions_.end());
    for (Session* s : live)
        s->stop();
}

} // namespace cbd
