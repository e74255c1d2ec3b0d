//! Fairness: the fan-out a member causes is charged to it, so that churn in
//! a large group neither floods the other members nor slows unrelated
//! pairs. Alone in its test binary, so that no other test's load lands in
//! the latency it measures.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Relay round trips from `caller` to `callee` (answered by a task of its
/// own): their median until `until`, at least `min` of them.
async fn median_round_trip(
    caller: &mut common::Raw,
    group: &Value,
    callee: &str,
    min: usize,
    until: Instant,
) -> Duration {
    // 100 a second, within the rate limit.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let mut times = Vec::new();
    while times.len() < min || Instant::now() < until {
        pace.tick().await;
        let started = Instant::now();
        let response = caller.call("relay", json!([group, callee, "ping"])).await;
        assert_eq!(response["result"], json!("pong"), "{response}");
        times.push(started.elapsed());
        if times.len() >= 2000 {
            break;
        }
    }
    times.sort();
    times[times.len() / 2]
}

/// Finding 5: the notifications a join or leave makes the server send to
/// every other member are charged to the one who joins or leaves. Four
/// members churning 90 join/leave pairs a second each (within a rate limit
/// of 200 a second) in a 100-member group made ~100 notifications per
/// message they sent; now each pays for what it causes, so the bystanders
/// hear a bounded number, none is disconnected, and a pair relaying in
/// another group keeps its latency within twice its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_churn_is_charged_to_the_churner() {
    const MEMBERS: usize = 100;
    const CHURNERS: usize = 4;
    const RATE: usize = 200;
    let (_server, addr) = common::spawn_binary(&["--rate-limit", "200"]).await;
    let url = format!("ws://{addr}/ws");
    let user = || async {
        let mut client = common::Raw::connect(&url).await;
        let id = client.ok("init", json!([])).await;
        (client, id.as_str().expect("user id").to_owned())
    };
    let (mut owner, _) = user().await;
    let group = owner.ok("create", json!([])).await;
    let mut members = vec![owner];
    for _ in 1..MEMBERS {
        let (mut member, _) = user().await;
        member.ok("join", json!([group])).await;
        members.push(member);
    }
    for member in &mut members {
        member.received_so_far().await;
    }
    // The bystander pair, in a group of its own.
    let (mut caller, _) = user().await;
    let (mut callee, callee_id) = user().await;
    let pair = caller.ok("create", json!([])).await;
    callee.ok("join", json!([pair])).await;
    let answering = tokio::spawn(async move {
        loop {
            let request = callee.incoming("relay").await;
            callee.answer(&request, json!("pong")).await;
        }
    });
    let baseline = median_round_trip(&mut caller, &pair, &callee_id, 50, Instant::now()).await;

    let attack_time = Duration::from_secs(2);
    let started = Instant::now();
    let mut churners = Vec::new();
    for _ in 0..CHURNERS {
        let (mut churner, _) = user().await;
        let group = group.clone();
        churners.push(tokio::spawn(async move {
            // 90 join/leave pairs a second: 180 messages, within the rate limit.
            let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / 180));
            let mut changes = 0;
            for _ in 0..5000 {
                if started.elapsed() > attack_time {
                    break;
                }
                for method in ["join", "leave"] {
                    pace.tick().await;
                    let response = churner.call(method, json!([group])).await;
                    if response.get("result").is_some() {
                        changes += 1;
                    } else if response["error"]["code"] == -32009 {
                        // Busy: back off as the protocol asks, a tenth of the window.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            changes
        }));
    }
    let during = median_round_trip(&mut caller, &pair, &callee_id, 50, started + attack_time).await;
    let mut changes = 0;
    for churner in churners {
        changes += churner.await.expect("churner");
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The machine's own load moves over seconds (other builds and tests
    // share its cores): a baseline taken after the attack as well tells that
    // apart from what the attack does.
    let after = median_round_trip(&mut caller, &pair, &callee_id, 50, Instant::now()).await;
    let baseline = baseline.max(after);
    answering.abort();

    // Each change costs its churner one message per member told (~100), so
    // all of them together make at most this many (a quarter more for the
    // last change each makes into debt, and timing), and each bystander
    // hears of each change once.
    let budget = (1.25 * CHURNERS as f64 * RATE as f64 * (elapsed + 1.0) / (MEMBERS - 1) as f64).ceil() as usize;
    let mut heard = Vec::new();
    for member in &mut members {
        heard.push(member.received_so_far().await.len());
    }
    let most = heard.iter().copied().max().unwrap_or(0);
    eprintln!(
        "churn: {changes} membership changes in {elapsed:.1} s; a bystander heard up to {most}; \
         bystander pair median {baseline:?} before and after (the larger), {during:?} during"
    );
    assert!(changes <= budget, "{changes} membership changes, over the {budget} the churners paid for");
    assert!(most <= budget, "a bystander heard {most} notifications, over {budget}");
    assert!(during <= baseline * 2, "the bystander pair slowed from {baseline:?} to {during:?}");
}
