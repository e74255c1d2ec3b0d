//! The churn soak (soak.rs) again, against a cluster: three nodes sharing
//! one redis-server of its own, each client connecting to the next node in
//! turn, so that joins, leaves, drops and relays cross nodes. It ends with
//! nothing held on any node (users, groups, relays in flight, connections)
//! and no user, group or membership key left in Redis. Alone in its binary
//! for the same reason as the soak: the heap it measures is its own.

#[path = "soak.rs"]
mod soak;
