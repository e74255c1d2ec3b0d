//! Every method of the protocol (interfaces/README.md), its success path and its errors, through a
//! real server and raw WebSocket clients.

mod common;

use common::{Raw, TestServer, group_of_three};
use serde_json::{Value, json};
use webrtc_p2p_interfaces::SignalingServer;
use webrtc_p2p_simple::HubStats;

const NOT_INITIALIZED: i64 = -32001;
const ALREADY_INITIALIZED: i64 = -32002;
const GROUP_NOT_FOUND: i64 = -32003;
const NOT_A_MEMBER: i64 = -32004;
const USER_NOT_FOUND: i64 = -32005;
const PERMISSION_DENIED: i64 = -32006;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INVALID_REQUEST: i64 = -32600;
const PARSE_ERROR: i64 = -32700;

const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

fn is_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[tokio::test]
async fn init_returns_a_fresh_32_hex_digit_user_id_once() {
    let server = TestServer::start().await;
    let (mut a, ua) = server.user().await;
    let (_b, ub) = server.user().await;
    assert!(is_id(&json!(ua)) && is_id(&json!(ub)));
    assert_ne!(ua, ub);
    assert_eq!(a.err("init", json!([])).await, ALREADY_INITIALIZED);
}

#[tokio::test]
async fn every_method_but_init_needs_init_first() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    assert_eq!(client.err("create", json!([])).await, NOT_INITIALIZED);
    assert_eq!(client.err("join", json!([UNKNOWN_ID])).await, NOT_INITIALIZED);
    assert_eq!(client.err("leave", json!([UNKNOWN_ID])).await, NOT_INITIALIZED);
    assert_eq!(client.err("get_members", json!([UNKNOWN_ID])).await, NOT_INITIALIZED);
    assert_eq!(client.err("relay", json!([UNKNOWN_ID, UNKNOWN_ID, 1])).await, NOT_INITIALIZED);
}

#[tokio::test]
async fn create_makes_the_caller_owner_and_first_member_with_default_capability_10() {
    let server = TestServer::start().await;
    let (mut a, ua) = server.user().await;
    let (mut b, _) = server.user().await;
    let group = a.ok("create", json!([])).await;
    assert!(is_id(&group));
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua]));
    assert_eq!(b.ok("join", json!([group])).await, json!({"owner": ua, "capability": 10}));
}

#[tokio::test]
async fn create_takes_a_capability_from_1_to_15_by_position_or_by_name() {
    let server = TestServer::start().await;
    let (mut a, ua) = server.user().await;
    let (mut b, _) = server.user().await;
    for (params, want) in [(json!([1]), 1), (json!([15]), 15), (json!({"capability": 5}), 5), (json!({}), 10)] {
        let group = a.ok("create", params).await;
        assert_eq!(b.ok("join", json!({"group_id": group})).await, json!({"owner": ua, "capability": want}));
    }
    for bad in [json!([0]), json!([16]), json!([-1]), json!(["10"]), json!([2.5]), json!({"capability": 99})] {
        assert_eq!(a.err("create", bad.clone()).await, INVALID_PARAMS, "{bad}");
    }
}

#[tokio::test]
async fn join_tells_every_other_member_and_only_them() {
    let server = TestServer::start().await;
    let (group, [(mut a, _), (mut b, _), (mut c, uc)]) = group_of_three(&server).await;
    // group_of_three consumed A's two and B's one member_joined; C got none.
    c.nothing_pending().await;
    let (mut d, ud) = server.user().await;
    d.ok("join", json!([group])).await;
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(member.incoming("member_joined").await["params"], json!([group, ud]));
        member.nothing_pending().await;
    }
    d.nothing_pending().await;
    assert_eq!(a.ok("get_members", json!([group])).await[2], json!(uc));
}

#[tokio::test]
async fn join_of_a_group_one_is_in_succeeds_and_changes_nothing() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    let members = a.ok("get_members", json!([group])).await;
    assert_eq!(b.ok("join", json!([group])).await, json!({"owner": ua, "capability": 10}));
    assert_eq!(a.ok("join", json!([group])).await, json!({"owner": ua, "capability": 10}));
    assert_eq!(a.ok("get_members", json!([group])).await, members);
    a.nothing_pending().await;
}

#[tokio::test]
async fn join_of_an_unknown_group_is_group_not_found() {
    let server = TestServer::start().await;
    let (mut a, _) = server.user().await;
    assert_eq!(a.err("join", json!([UNKNOWN_ID])).await, GROUP_NOT_FOUND);
}

#[tokio::test]
async fn get_members_lists_join_order_caller_included_and_needs_membership() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), (mut c, uc)]) = group_of_three(&server).await;
    assert_eq!(c.ok("get_members", json!([group])).await, json!([ua, ub, uc]));
    assert_eq!(b.ok("get_members", json!({"group_id": group})).await, json!([ua, ub, uc]));
    let (mut outsider, _) = server.user().await;
    assert_eq!(outsider.err("get_members", json!([group])).await, NOT_A_MEMBER);
    assert_eq!(a.err("get_members", json!([UNKNOWN_ID])).await, GROUP_NOT_FOUND);
}

#[tokio::test]
async fn leave_tells_the_remaining_members_and_answers_null() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), (mut c, uc)]) = group_of_three(&server).await;
    assert_eq!(b.ok("leave", json!([group])).await, Value::Null);
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ub]));
    assert_eq!(c.incoming("member_left").await["params"], json!([group, ub]));
    b.nothing_pending().await;
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, uc]));
    assert_eq!(b.err("leave", json!([group])).await, NOT_A_MEMBER);
    assert_eq!(b.err("get_members", json!([group])).await, NOT_A_MEMBER);
    assert_eq!(b.err("leave", json!([UNKNOWN_ID])).await, GROUP_NOT_FOUND);
}

#[tokio::test]
async fn owner_leaving_hands_over_to_the_earliest_joined_member() {
    let server = TestServer::start().await;
    let (group, [(mut a, _), (mut b, ub), (mut c, uc)]) = group_of_three(&server).await;
    a.ok("leave", json!([group])).await;
    assert_eq!(c.ok("get_members", json!([group])).await, json!([ub, uc]));
    let (mut d, _) = server.user().await;
    assert_eq!(d.ok("join", json!([group])).await, json!({"owner": ub, "capability": 10}));
    b.incoming("member_left").await;
}

#[tokio::test]
async fn disconnect_leaves_every_group_and_the_empty_group_disappears() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (b, ub), (c, _)]) = group_of_three(&server).await;
    let (mut other, _) = server.user().await;
    let second = other.ok("create", json!([])).await;
    a.ok("join", json!([second])).await;
    other.incoming("member_joined").await;

    drop(b);
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ub]));
    c.close().await;
    a.incoming("member_left").await;
    drop(a);
    assert_eq!(other.incoming("member_left").await["params"], json!([second, ua]));
    server.settles_at(HubStats { users: 1, groups: 1 }).await;
    let (mut d, _) = server.user().await;
    assert_eq!(d.err("join", json!([group])).await, GROUP_NOT_FOUND);
    other.ok("leave", json!([second])).await;
    assert_eq!(d.err("join", json!([second])).await, GROUP_NOT_FOUND);
    assert_eq!(server.stats().await, HubStats { users: 2, groups: 0 });
}

#[tokio::test]
async fn relay_reaches_the_target_stamped_with_the_sender_and_returns_its_answer() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), _]) = group_of_three(&server).await;
    let id = b
        .request("relay", json!({"group_id": group, "user_id": ua, "data": {"sdp": "v=0", "n": [1, 2.5, null]}}))
        .await;
    let request = a.incoming("relay").await;
    assert_eq!(request["params"], json!([group, ub, {"sdp": "v=0", "n": [1, 2.5, null]}]));
    assert!(request["id"].is_string(), "the server's own ids are strings: {request}");
    a.answer(&request, json!({"sdp": "answer"})).await;
    assert_eq!(b.response(id).await["result"], json!({"sdp": "answer"}));
}

#[tokio::test]
async fn relay_passes_the_targets_error_through_unchanged() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    let id = b.request("relay", json!([group, ua, "offer"])).await;
    let request = a.incoming("relay").await;
    let error = json!({"code": 4711, "message": "no thanks", "data": {"why": ["busy", 1]}});
    a.send(json!({"jsonrpc": "2.0", "id": request["id"], "error": error})).await;
    assert_eq!(b.response(id).await["error"], error);
}

#[tokio::test]
async fn relay_data_may_be_any_json_value() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    for data in [json!(null), json!(0), json!("c2RwLWJhc2U2NA=="), json!([]), json!({"a": {"b": [true]}})] {
        let id = b.request("relay", json!([group, ua, data])).await;
        let request = a.incoming("relay").await;
        assert_eq!(request["params"][2], data);
        a.answer(&request, data.clone()).await;
        assert_eq!(b.response(id).await["result"], data);
    }
}

#[tokio::test]
async fn relay_errors_come_in_the_protocols_order() {
    let server = TestServer::start().await;
    let (mut owner, uo) = server.user().await;
    let (mut m1, u1) = server.user().await;
    let (mut m2, u2) = server.user().await;
    let (mut outsider, ux) = server.user().await;
    let star = owner.ok("create", json!([5])).await;
    m1.ok("join", json!([star])).await;
    m2.ok("join", json!([star])).await;

    // -32601 beats everything, -32602 beats NotInitialized.
    let mut fresh = server.connect().await;
    assert_eq!(fresh.err("relai", json!([])).await, METHOD_NOT_FOUND);
    assert_eq!(fresh.err("relay", json!([star, u1])).await, INVALID_PARAMS);
    assert_eq!(fresh.err("relay", json!([star, u1, 1])).await, NOT_INITIALIZED);
    assert_eq!(m1.err("relay", json!([UNKNOWN_ID, u2, 1])).await, GROUP_NOT_FOUND);
    assert_eq!(outsider.err("relay", json!([star, u1, 1])).await, NOT_A_MEMBER);
    assert_eq!(outsider.err("relay", json!([star, ux, 1])).await, NOT_A_MEMBER);
    assert_eq!(m1.err("relay", json!([star, ux, 1])).await, USER_NOT_FOUND);
    assert_eq!(m1.err("relay", json!([star, UNKNOWN_ID, 1])).await, USER_NOT_FOUND, "unknown looks like outsider");
    assert_eq!(m1.err("relay", json!([star, u2, 1])).await, PERMISSION_DENIED);
    assert_eq!(owner.err("relay", json!([star, ux, 1])).await, USER_NOT_FOUND);
    let _ = uo;
}

#[tokio::test]
async fn owner_only_group_lets_members_relay_with_the_owner_but_not_each_other() {
    let server = TestServer::start().await;
    let (mut owner, uo) = server.user().await;
    let (mut m1, u1) = server.user().await;
    let (mut m2, u2) = server.user().await;
    let star = owner.ok("create", json!([5])).await;
    m1.ok("join", json!([star])).await;
    m2.ok("join", json!([star])).await;

    let id = m1.request("relay", json!([star, uo, "to owner"])).await;
    let request = owner.incoming("relay").await;
    owner.answer(&request, json!("ok")).await;
    assert_eq!(m1.response(id).await["result"], "ok");

    let id = owner.request("relay", json!([star, u2, "to member"])).await;
    let request = m2.incoming("relay").await;
    m2.answer(&request, json!("ok")).await;
    assert_eq!(owner.response(id).await["result"], "ok");

    assert_eq!(m1.err("relay", json!([star, u2, "x"])).await, PERMISSION_DENIED);
    assert_eq!(m2.err("relay", json!([star, u1, "x"])).await, PERMISSION_DENIED);
}

#[tokio::test]
async fn params_that_are_missing_or_ill_typed_are_invalid_params() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), _b, _c]) = group_of_three(&server).await;
    for (method, params) in [
        ("join", json!([])),
        ("join", json!([42])),
        ("join", json!(["0123456789ABCDEF0123456789ABCDEF"])),
        ("join", json!(["01234567-89ab-cdef-0123-456789abcdef"])),
        ("join", json!({"group": group})),
        ("leave", json!([null])),
        ("get_members", json!({})),
        ("relay", json!([group, ua])),
        ("relay", json!({"group_id": group, "user_id": ua})),
        ("relay", json!([group, "nobody", 1])),
        ("relay", json!([1, ua, 1])),
    ] {
        assert_eq!(a.err(method, params.clone()).await, INVALID_PARAMS, "{method} {params}");
    }
}

#[tokio::test]
async fn unknown_method_is_method_not_found_before_and_after_init() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    assert_eq!(client.err("frobnicate", json!([])).await, METHOD_NOT_FOUND);
    client.ok("init", json!([])).await;
    assert_eq!(client.err("frobnicate", json!([])).await, METHOD_NOT_FOUND);
}

#[tokio::test]
async fn request_ids_are_echoed_exactly_as_sent() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for id in ["\"abc\"", "\"\"", "0", "-1", "-9007199254740993", "18446744073709551615", "1.5", "-2e10", "\"\\u00e9\""]
    {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"nope"}}"#);
        client.send_text(&text).await;
        let response = client.next().await;
        assert_eq!(response["id"], serde_json::from_str::<Value>(id).unwrap(), "{id}");
    }
    client.send_text(r#"{"jsonrpc":"2.0","id":null,"method":"nope"}"#).await;
    assert_eq!(client.next().await["id"], Value::Null, "a null id is a request, and gets its answer");
}

#[tokio::test]
async fn garbage_gets_parse_error_and_non_messages_get_invalid_request() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for (text, want) in [
        ("{", PARSE_ERROR),
        ("hello", PARSE_ERROR),
        ("42", INVALID_REQUEST),
        (r#"{"jsonrpc":"2.0"}"#, INVALID_REQUEST),
        (r#"{"method":"init","id":1}"#, INVALID_REQUEST),
        (r#"{"jsonrpc":"2.0","method":"init","id":1,"params":"x"}"#, INVALID_REQUEST),
        ("[]", INVALID_REQUEST),
    ] {
        client.send_text(text).await;
        let response = client.next().await;
        assert_eq!(response["error"]["code"], want, "{text}: {response}");
    }
    client.ok("init", json!([])).await;
}

#[tokio::test]
async fn a_binary_frame_is_read_as_text() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = r#"{"jsonrpc":"2.0","id":7,"method":"init","params":[]}"#;
    client.send_message(tokio_tungstenite::tungstenite::Message::binary(frame.as_bytes().to_vec())).await;
    assert!(is_id(&client.next().await["result"]));
}

#[tokio::test]
async fn batches_run_in_order_and_notifications_in_them_get_no_answer() {
    let server = TestServer::start().await;
    if server.skips_on_a_cluster("a batch's `init` waits for Redis, and the `create` after it starts meanwhile") {
        return;
    }
    let mut client = server.connect().await;
    client
        .send_text(
            r#"[{"jsonrpc":"2.0","id":"a","method":"init"},
                {"jsonrpc":"2.0","method":"create"},
                {"jsonrpc":"2.0","id":"b","method":"create","params":[3]},
                {"jsonrpc":"2.0","id":"c","method":"init"},
                {"nonsense":true}]"#,
        )
        .await;
    let answers = client.next().await;
    let answers = answers.as_array().expect("an array");
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[0]["id"], "a");
    assert!(is_id(&answers[0]["result"]));
    assert_eq!(answers[1]["id"], "b");
    assert!(is_id(&answers[1]["result"]));
    assert_eq!(answers[2]["error"]["code"], ALREADY_INITIALIZED);
    assert_eq!(answers[3]["error"]["code"], INVALID_REQUEST);
    client.send_text(r#"[{"jsonrpc":"2.0","method":"create"}]"#).await;
    client.nothing_pending().await;
}

#[tokio::test]
async fn a_response_with_an_id_the_server_did_not_issue_is_dropped_silently() {
    let server = TestServer::start().await;
    let (mut client, _) = server.user().await;
    for frame in [
        json!({"jsonrpc": "2.0", "id": 1, "result": "x"}),
        json!({"jsonrpc": "2.0", "id": "s999", "result": "x"}),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": 1, "message": "x"}}),
    ] {
        client.send(frame).await;
    }
    client.nothing_pending().await;
}

#[tokio::test]
async fn ids_are_unguessable_and_distinct() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.ok("init", json!([])).await;
    let mut groups = std::collections::HashSet::new();
    for _ in 0..200 {
        assert!(groups.insert(client.ok("create", json!([])).await.as_str().unwrap().to_owned()));
    }
    // 128 random bits: across 200 ids every hex digit shows up in every position.
    for position in 0..32 {
        let digits: std::collections::HashSet<u8> = groups.iter().map(|g| g.as_bytes()[position]).collect();
        assert!(digits.len() >= 12, "position {position} looks fixed: {digits:?}");
    }
}

#[tokio::test]
async fn groups_per_user_and_members_per_group_are_limited() {
    let server = TestServer::with_flags(&["--max-groups-per-user", "2", "--max-members-per-group", "2"]).await;
    let (mut a, _) = server.user().await;
    let (mut b, _) = server.user().await;
    let (mut c, _) = server.user().await;
    let g1 = a.ok("create", json!([])).await;
    let g2 = a.ok("create", json!([])).await;
    assert_eq!(a.err("create", json!([])).await, -32010);
    b.ok("join", json!([g1])).await;
    assert_eq!(c.err("join", json!([g1])).await, -32010, "group full");
    let g3 = c.ok("create", json!([])).await;
    let g4 = c.ok("create", json!([])).await;
    assert_eq!(a.err("join", json!([g3])).await, -32010, "a is in two groups");
    a.ok("leave", json!([g2])).await;
    a.ok("join", json!([g3])).await;
    let _ = (g4, Raw::connect);
}

#[tokio::test]
async fn rpc_discover_answers_the_openrpc_document_and_it_lists_exactly_the_methods_served() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let document = client.ok("rpc.discover", json!([])).await;
    assert_eq!(document, serde_json::from_str::<Value>(webrtc_p2p_interfaces::OPENRPC).unwrap());
    let name = |m: &Value| m["name"].as_str().unwrap().to_owned();
    let mut listed: Vec<_> = document["methods"].as_array().unwrap().iter().map(name).collect();
    let mut served: Vec<_> = server.hub.clone().into_rpc().method_names().map(str::to_owned).collect();
    listed.sort();
    served.sort();
    assert_eq!(listed, served);
}
