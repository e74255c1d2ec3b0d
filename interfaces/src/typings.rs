//! The TypeScript wire types in `typings/`, generated from the Rust types.
//! This test fails when they drift; `UPDATE_TYPINGS=1 cargo test -p
//! webrtc-p2p-interfaces typings` writes them anew.

use std::path::PathBuf;

use ts_rs::{Config, TS};

use crate::{Capability, ErrorCode, GroupId, JoinResult, UserId};

/// `ErrorCode` as a TS const object + type: ts-rs would write the variant
/// names, but the wire carries the numeric codes.
fn error_code_ts() -> String {
    let mut out = String::from(
        "// Generated from the Rust `ErrorCode` by interfaces/src/typings.rs. Do not edit.\n\n\
         /** The application error codes of the protocol (JSON-RPC `error.code`). */\n\
         export const ErrorCode = {\n",
    );
    for e in ErrorCode::ALL {
        out.push_str(&format!("  /** {e}. */\n  {}: {},\n", e.name(), e.code()));
    }
    out.push_str("} as const;\n\nexport type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];\n");
    out
}

fn generated() -> Vec<(&'static str, String)> {
    let cfg = Config::new();
    let ts = |r: Result<String, ts_rs::ExportError>| r.unwrap_or_else(|e| panic!("ts-rs export failed: {e}"));
    vec![
        ("UserId.ts", ts(UserId::export_to_string(&cfg))),
        ("GroupId.ts", ts(GroupId::export_to_string(&cfg))),
        ("Capability.ts", ts(Capability::export_to_string(&cfg))),
        ("JoinResult.ts", ts(JoinResult::export_to_string(&cfg))),
        ("ErrorCode.ts", error_code_ts()),
    ]
}

#[test]
fn typings_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../typings");
    let update = std::env::var_os("UPDATE_TYPINGS").is_some();
    let mut stale = Vec::new();
    for (name, want) in generated() {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "typings/ is stale for {stale:?}: run `UPDATE_TYPINGS=1 cargo test -p webrtc-p2p-interfaces typings` and commit"
    );
}
