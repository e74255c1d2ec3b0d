//! The TypeScript wire types in `typings/`, generated from the Rust types.
//! This test fails when they drift; `UPDATE_TYPINGS=1 cargo test -p
//! webrtc-p2p-interfaces typings` writes them anew.

use std::path::PathBuf;

use ts_rs::{Config, TS};

use crate::payload::{
    Body, Chunk, ChunkKind, IceCandidate, MAX_BODY_BYTES, NO_WEBRTC, RelayPayload, SdpType, SessionDescription, Signal,
    UnicastAnswer,
};
use crate::{
    Capability, ErrorCode, Exchange, GroupId, IceServer, JoinResult, MemberInfo, Members, ResumeResult, SessionFacts,
    UserId,
};

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

/// The constants clients share, as TS constants.
fn constants_ts() -> String {
    format!(
        "// Generated from the Rust constants by interfaces/src/typings.rs. Do not edit.\n\n\
         /** {} */\nexport const NO_WEBRTC = {};\n\n\
         /** {} */\nexport const MAX_BODY_BYTES = {};\n",
        "The error code a member without WebRTC answers an offer with (client to client).",
        NO_WEBRTC,
        "The largest body a broadcast, unicast or reply may carry, in bytes.",
        MAX_BODY_BYTES,
    )
}

/// The pair rule as a table, for the TypeScript client's tests: one row per
/// capability and "one of the pair is the owner", with what each kind allows
/// and whether the pair is linked (allowed anything).
fn pair_rule_json() -> String {
    let mut rows = Vec::new();
    for bits in 1..=15 {
        let capability = Capability::from_bits(bits).unwrap_or_default();
        for one_is_owner in [false, true] {
            let [broadcast, unicast] = Exchange::ALL.map(|kind| capability.allows(kind, one_is_owner));
            rows.push(serde_json::json!({
                "capability": bits,
                "oneIsOwner": one_is_owner,
                "broadcast": broadcast,
                "unicast": unicast,
                "link": capability.allows_pair(one_is_owner),
            }));
        }
    }
    let mut out = serde_json::to_string_pretty(&rows).unwrap_or_default();
    out.push('\n');
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
        ("RelayPayload.ts", ts(RelayPayload::export_to_string(&cfg))),
        ("Signal.ts", ts(Signal::export_to_string(&cfg))),
        ("SessionDescription.ts", ts(SessionDescription::export_to_string(&cfg))),
        ("SdpType.ts", ts(SdpType::export_to_string(&cfg))),
        ("IceCandidate.ts", ts(IceCandidate::export_to_string(&cfg))),
        ("RelayBody.ts", ts(Body::export_to_string(&cfg))),
        ("RelayChunk.ts", ts(Chunk::export_to_string(&cfg))),
        ("ChunkKind.ts", ts(ChunkKind::export_to_string(&cfg))),
        ("UnicastAnswer.ts", ts(UnicastAnswer::export_to_string(&cfg))),
        ("constants.ts", constants_ts()),
        ("SessionFacts.ts", ts(SessionFacts::export_to_string(&cfg))),
        ("IceServer.ts", ts(IceServer::export_to_string(&cfg))),
        ("ResumeResult.ts", ts(ResumeResult::export_to_string(&cfg))),
        ("MemberInfo.ts", ts(MemberInfo::export_to_string(&cfg))),
        ("Members.ts", ts(Members::export_to_string(&cfg))),
        ("ErrorCode.ts", error_code_ts()),
        ("pairRule.json", pair_rule_json()),
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
