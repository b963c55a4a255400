// ReplyQueue (see reply_queue.hpp).
#include "daemon/dispatch/reply_queue.hpp"

#include <cassert>
#include <utility>

namespace cbd {

void ReplyQueue::seal_back() {
    if (!slots_.empty() && slots_.back().open) {
        slots_.back().open = false;
        sealed_bytes_ += slots_.back().text.size();
    }
}

std::string& ReplyQueue::ready_tail() {
    if (slots_.empty() || !slots_.back().open) {
        Slot& s = slots_.emplace_back();
        s.text = std::move(spare_);
        s.text.clear();
        s.ready = true;
        s.open = true;
    }
    return slots_.back().text;
}

ReplyQueue::Ticket ReplyQueue::reserve(std::size_t weight) {
    seal_back();
    slots_.emplace_back().weight = weight;
    waiting_ += weight;
    return front_ticket_ + slots_.size() - 1;
}

ReplyQueue::Slot& ReplyQueue::slot_of(Ticket ticket) {
    assert(ticket >= front_ticket_ && ticket - front_ticket_ < slots_.size());
    return slots_[static_cast<std::size_t>(ticket - front_ticket_)];
}

void ReplyQueue::fill(Ticket ticket, std::string text) {
    // A slot is filled once; a second answer (a backend that answered after
    // its call failed and the slot was answered for it) is dropped.
    if (ticket < front_ticket_ || ticket - front_ticket_ >= slots_.size())
        return;
    Slot& s = slot_of(ticket);
    if (s.ready)
        return;
    s.text = std::move(text);
    s.ready = true;
    sealed_bytes_ += s.text.size();
    waiting_ -= s.weight;
    if (&s == &slots_.front() && on_front_ready)
        on_front_ready();
}

void ReplyQueue::take_ready(std::string& out) {
    while (!slots_.empty() && slots_.front().ready) {
        Slot& s = slots_.front();
        if (!s.open)
            sealed_bytes_ -= s.text.size();
        if (out.empty())
            out.swap(s.text); // the common case: one batch, no copy
        else
            out += s.text;
        s.text.clear();
        spare_ = std::move(s.text);
        slots_.pop_front();
        front_ticket_ += 1;
    }
}

} // namespace cbd
