//! The v1 suites again, against a cluster: in this binary every test
//! server is three nodes sharing one redis-server of its own (started by
//! the harness on a free loopback port), and each test's clients connect to
//! the nodes in turn, so a group's members sit on different nodes. The
//! harness tells this binary by its name; the suites' files are the same
//! ones the single-node binaries run.
// Each suite brings its own copy of the harness (`mod common`).
#![allow(clippy::duplicate_mod)]

#[path = "passthrough.rs"]
mod passthrough;
#[path = "protocol.rs"]
mod protocol;
#[path = "relay.rs"]
mod relay;
