//! Join tokens and session facts through the real server: every way a token
//! can be wrong, what `create` and `groups` grant, `info` in `member_joined`
//! and `get_members`, TURN credentials from `session`, and a server without
//! an auth secret staying v1.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Raw, TestServer, metric};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use webrtc_p2p_simple::auth::{Claims, GroupGrant};

const SECRET: &str = "an auth secret for tests";
const UNAUTHORIZED: i64 = -32013;
const PERMISSION_DENIED: i64 = -32006;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn fresh() -> Claims {
    Claims::expiring_in(Duration::from_secs(300))
}

fn token(claims: Claims) -> String {
    claims.sign(SECRET.as_bytes())
}

async fn auth_server(extra: &[&str]) -> TestServer {
    let mut flags = vec!["--auth-secret", SECRET];
    flags.extend_from_slice(extra);
    TestServer::with_flags(&flags).await
}

/// A client initialised with `claims`, and its user id.
async fn user(server: &TestServer, claims: Claims) -> (Raw, String) {
    let mut client = server.connect().await;
    let id = client.ok("init", json!([token(claims)])).await;
    (client, id.as_str().expect("user id").to_owned())
}

#[tokio::test]
async fn every_bad_token_is_unauthorized_and_the_connection_may_try_again() {
    let server = auth_server(&[]).await;
    let hs384 =
        jsonwebtoken::encode(&Header::new(Algorithm::HS384), &fresh(), &EncodingKey::from_secret(SECRET.as_bytes()));
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fresh()).unwrap())
    );
    let no_exp = {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"create":true}"#)
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        format!("{signed}.{}", jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap())
    };
    let cases: Vec<(&str, Value)> = vec![
        ("missing", json!([])),
        ("missing, by name", json!({})),
        ("malformed", json!(["not.a.jwt"])),
        ("malformed, not even dots", json!(["garbage"])),
        ("bad signature", json!([fresh().sign(b"another secret")])),
        ("wrong algorithm", json!([hs384.unwrap()])),
        ("alg none", json!([alg_none])),
        ("expired", json!([token(Claims { exp: now() - 120, ..fresh() })])),
        ("not yet valid", json!([token(Claims { nbf: Some(now() + 120), ..fresh() })])),
        ("no exp", json!([no_exp])),
    ];
    let mut client = server.connect().await;
    for (case, params) in &cases {
        let response = client.call("init", params.clone()).await;
        assert_eq!(response["error"]["code"], UNAUTHORIZED, "{case}: {response}");
        assert_eq!(client.err("create", json!([])).await, -32001, "{case}: still not initialised");
    }
    // The same connection, a good token at last: by name this time.
    let id = client.ok("init", json!({"token": token(fresh())})).await;
    assert!(id.is_string());
    assert_eq!(client.err("init", json!([token(fresh())])).await, -32002, "AlreadyInitialized comes first");

    let scrape = server.scrape().await;
    for (reason, want) in [
        ("missing", 2.0),
        ("malformed", 2.0),
        ("bad_signature", 1.0),
        ("wrong_algorithm", 2.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("bad_claims", 1.0),
    ] {
        let name = format!("webrtc_p2p_auth_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&scrape, &name), Some(want), "{name}");
    }
    assert_eq!(metric(&scrape, "webrtc_p2p_errors_total{error=\"Unauthorized\"}"), Some(10.0));
}

#[tokio::test]
async fn an_unauthorized_connection_stays_open_until_the_init_timeout() {
    let server = auth_server(&["--init-timeout", "300ms"]).await;
    let mut client = server.connect().await;
    assert_eq!(client.err("init", json!(["nope"])).await, UNAUTHORIZED);
    assert_eq!(client.closed().await, (Some(1008), "init timeout".to_owned()));
}

#[tokio::test]
async fn create_and_join_need_their_grants_in_the_protocols_error_order() {
    let server = auth_server(&[]).await;
    let (mut owner, _) = user(&server, Claims { create: true, ..fresh() }).await;
    let g = owner.ok("create", json!([])).await;
    let h = owner.ok("create", json!([5])).await;
    assert_eq!(owner.ok("join", json!([g])).await["capability"], 10, "a creator is in its group, grants or not");

    let (mut listed, _) = user(&server, Claims { groups: GroupGrant::Only(vec![parse(&g)]), ..fresh() }).await;
    assert_eq!(listed.err("create", json!([])).await, PERMISSION_DENIED, "create: false");
    assert_eq!(listed.err("create", json!([16])).await, -32602, "bad params come before permission");
    assert_eq!(listed.ok("join", json!([g])).await["capability"], 10);
    assert_eq!(listed.err("join", json!([h])).await, PERMISSION_DENIED, "not in the list");
    let gone = "0".repeat(32);
    assert_eq!(listed.err("join", json!([gone])).await, -32003, "GroupNotFound comes before PermissionDenied");

    let (mut anywhere, _) = user(&server, Claims { groups: GroupGrant::Any, ..fresh() }).await;
    anywhere.ok("join", json!([g])).await;
    anywhere.ok("join", json!({"group_id": h})).await;
    assert_eq!(anywhere.err("create", json!([])).await, PERMISSION_DENIED);

    let (mut nothing, _) = user(&server, fresh()).await;
    assert_eq!(nothing.err("join", json!([g])).await, PERMISSION_DENIED, "no groups claim: no group");
}

#[tokio::test]
async fn info_reaches_the_other_members_in_member_joined_and_get_members() {
    let server = auth_server(&[]).await;
    let ada = json!({"name": "Ada", "avatar": [1, 2, 3]});
    let (mut a, ua) = user(&server, Claims { create: true, info: Some(ada.clone()), ..fresh() }).await;
    let g = a.ok("create", json!([])).await;
    let (mut b, ub) = user(&server, Claims { groups: GroupGrant::Any, ..fresh() }).await;
    b.ok("join", json!([g])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([g, ub, null]), "no info: null");
    let bob = json!("Bob");
    let (mut c, uc) = user(&server, Claims { groups: GroupGrant::Any, info: Some(bob.clone()), ..fresh() }).await;
    c.ok("join", json!([g])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([g, uc, bob]));
    assert_eq!(b.incoming("member_joined").await["params"], json!([g, uc, bob]));

    let with_info = json!([{"user_id": ua, "info": ada}, {"user_id": ub, "info": null}, {"user_id": uc, "info": bob}]);
    assert_eq!(c.ok("get_members", json!({"group_id": g, "info": true})).await, with_info);
    assert_eq!(b.ok("get_members", json!([g, true])).await, with_info, "by position too");
    assert_eq!(b.ok("get_members", json!([g])).await, json!([ua, ub, uc]));
    assert_eq!(b.ok("get_members", json!({"group_id": g, "info": false})).await, json!([ua, ub, uc]));
    assert_eq!(b.err("get_members", json!({"group_id": g, "info": "yes"})).await, -32602);

    // Leaving stays two params.
    c.ok("leave", json!([g])).await;
    assert_eq!(a.incoming("member_left").await["params"], json!([g, uc]));
}

#[tokio::test]
async fn an_info_over_one_kib_is_refused() {
    let server = auth_server(&[]).await;
    let mut client = server.connect().await;
    let big = Claims { info: Some(json!("x".repeat(1024))), ..fresh() };
    assert_eq!(client.err("init", json!([token(big)])).await, UNAUTHORIZED);
    let fits = Claims { info: Some(json!("x".repeat(1022))), ..fresh() };
    client.ok("init", json!([token(fits)])).await;
}

#[tokio::test]
async fn without_an_auth_secret_everything_stays_v1() {
    let server = TestServer::start().await;
    let mut a = server.connect().await;
    let ua = a.ok("init", json!(["a token nobody checks"])).await;
    let g = a.ok("create", json!([])).await;
    let (mut b, ub) = server.user().await;
    b.ok("join", json!([g])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([g, ub]));
    assert_eq!(a.ok("get_members", json!({"group_id": g, "info": true})).await, json!([ua, ub]));
    let facts = a.ok("session", json!([])).await;
    assert_eq!(facts["user_id"], ua);
    assert_eq!(facts["ice_servers"], json!([]), "no --stun-url, no --turn-url: no ICE servers");
}

#[tokio::test]
async fn session_hands_out_stun_and_fresh_turn_credentials() {
    let server = TestServer::with_flags(&[
        "--stun-url",
        "stun:stun.example:3478",
        "--turn-url",
        "turn:turn.example:3478?transport=udp",
        "--turn-url",
        "turns:turn.example:5349",
        "--turn-secret",
        "a turn secret",
        "--turn-ttl",
        "10m",
    ])
    .await;
    let mut client = server.connect().await;
    assert_eq!(client.err("session", json!([])).await, -32001, "after init only");
    let user = client.ok("init", json!([])).await;
    let before = now();
    let facts = client.ok("session", json!([])).await;
    assert_eq!(facts["user_id"], user);
    let servers = facts["ice_servers"].as_array().expect("a list");
    assert_eq!(servers[0], json!({"urls": ["stun:stun.example:3478"]}));
    assert_eq!(servers[1]["urls"], json!(["turn:turn.example:3478?transport=udp", "turns:turn.example:5349"]));
    let username = servers[1]["username"].as_str().expect("a username");
    let (expiry, who) = username.split_once(':').expect("<expiry>:<user_id>");
    assert_eq!(json!(who), user);
    let expiry: u64 = expiry.parse().expect("unix seconds");
    assert!((before + 600..=now() + 600).contains(&expiry), "{expiry} is now + 10 min");
    let credential = servers[1]["credential"].as_str().expect("a credential");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(credential.trim_end_matches('=').replace('+', "-").replace('/', "_")).unwrap().len(),
        20,
        "a base64 SHA-1 HMAC"
    );
}

fn parse(id: &Value) -> webrtc_p2p_interfaces::GroupId {
    id.as_str().expect("an id").parse().expect("a group id")
}
