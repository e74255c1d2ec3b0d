//! `MemoryBudget`: the bytes the whole server holds for its clients, counted
//! with one atomic, and what it refuses once they reach `--max-memory`.

use std::sync::atomic::{AtomicUsize, Ordering};

use webrtc_p2p_interfaces::ErrorCode;

/// The server's process-wide memory budget. Counted: every frame waiting for
/// a client (outgoing queues, what resumable sessions keep for replay), what
/// each connection's socket still has to write, and the messages being
/// read. Past the budget, new connections and frames larger than
/// [`MemoryBudget::SMALL`] are refused; small frames (signaling, answers,
/// notifications) always go through, bounded by the per-connection budgets.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes counted now.
    used: AtomicUsize,
    /// The budget (`--max-memory`).
    max: usize,
}

impl MemoryBudget {
    /// Frames up to this size are never refused for memory: they are the
    /// signaling traffic that keeps existing groups working while large
    /// relays are shed. Fixed.
    pub const SMALL: usize = 64 * 1024;

    /// A budget of `max` bytes, none used.
    pub const fn new(max: usize) -> Self {
        Self { used: AtomicUsize::new(0), max }
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether everything counted has reached the budget: new connections
    /// are refused.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.max
    }

    /// Whether `bytes` more may be taken now: a small frame always, a
    /// larger one while it fits within the budget.
    pub fn admits(&self, bytes: usize) -> bool {
        bytes <= Self::SMALL || self.has_room(bytes)
    }

    /// Whether `bytes` more fit within the budget, whatever their size.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes) <= self.max
    }

    /// Moves what one holder is charged from `*charged` to `now`.
    pub fn recharge(&self, charged: &mut usize, now: usize) {
        if now > *charged {
            self.used.fetch_add(now - *charged, Ordering::Relaxed);
        } else if now < *charged {
            self.used.fetch_sub(*charged - now, Ordering::Relaxed);
        }
        *charged = now;
    }
}

/// What a request gets when its relay or its answer is refused for memory:
/// Busy, as for any load the server sheds; the caller may try again later.
pub(crate) const REFUSAL: &str = "busy: the server's memory budget is spent; try again later";

/// [`REFUSAL`] with Busy's code.
pub(crate) const REFUSAL_CODE: i32 = ErrorCode::Busy.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_always_pass_larger_ones_only_within_the_budget() {
        let budget = MemoryBudget::new(200 * 1024);
        let mut held = 0;
        budget.recharge(&mut held, 150 * 1024);
        assert!(budget.admits(50 * 1024), "at the budget exactly");
        assert!(!budget.admits(MemoryBudget::SMALL + 1));
        assert!(!budget.is_spent());
        budget.recharge(&mut held, 250 * 1024);
        assert!(budget.is_spent());
        assert!(budget.admits(MemoryBudget::SMALL), "small frames keep flowing");
        budget.recharge(&mut held, 0);
        assert_eq!(budget.used(), 0);
        assert!(budget.admits(200 * 1024));
    }
}
