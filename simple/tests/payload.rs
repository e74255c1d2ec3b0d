//! The client payloads (`client::payload`) against the exact JSON the
//! TypeScript client produces: every constant below is the `data` of a relay
//! (or the result of one) as Chromium 156 sent it, running the bundle in
//! server/assets/, captured from its WebSocket. Parsing and writing them
//! again must give the same bytes, and binary bodies must keep theirs.

use webrtc_p2p_simple::client::payload::{
    Body, IceCandidate, MAX_BODY_BYTES, NO_WEBRTC, RelayPayload, SdpType, SessionDescription, Signal, no_webrtc,
};

/// An offer: sent as a relay request.
const OFFER: &str = r#"{"signal":{"description":{"type":"offer","sdp":"v=0\r\no=- 2848285096795049200 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:6uLk\r\na=ice-pwd:jWscM0WBi83uVBSVyvrvV75Q\r\na=ice-options:trickle\r\na=fingerprint:sha-256 BA:E5:24:DC:12:20:45:7E:07:CF:08:84:CA:70:63:F1:B0:B7:6A:33:A3:C9:8C:78:74:7C:03:D5:D0:24:B8:F6\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"}}}"#;

/// A relayed broadcast of text (non-ASCII, quotes).
const BROADCAST_TEXT: &str = r#"{"broadcast":{"text":"héllo \"quoted\" ☃"}}"#;

/// A relayed broadcast of the 256 byte values 0..=255.
const BROADCAST_ALL_BYTES: &str = r#"{"broadcast":{"base64":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w=="}}"#;

/// A relayed unicast of the bytes [0, 1, 2, 253, 254, 255]: a relay request.
const UNICAST_BYTES: &str = r#"{"unicast":{"base64":"AAEC/f7/"}}"#;

/// The answer to it: a relay notification.
const ANSWER: &str = r#"{"signal":{"description":{"type":"answer","sdp":"v=0\r\no=- 7866415285683503230 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:s7E4\r\na=ice-pwd:XHlQsfq6VABRKo+tZscJjIv3\r\na=ice-options:trickle\r\na=fingerprint:sha-256 65:5C:97:06:A3:34:92:6E:5D:BF:03:74:0B:0F:7C:A5:F0:61:59:02:A5:D8:CA:1B:EF:9C:C5:33:0C:D1:BF:32\r\na=setup:active\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"}}}"#;

/// A trickled ICE candidate: a relay notification.
const CANDIDATE: &str = r#"{"signal":{"candidate":{"candidate":"candidate:3863883085 1 udp 2122260223 127.0.0.1 40325 typ host generation 0 ufrag s7E4 network-id 1 network-cost 50","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"s7E4"}}}"#;

/// The browser's reply to that unicast (the bytes reversed): the relay's result.
const UNICAST_REPLY: &str = r#"{"base64":"//79AgEA"}"#;

/// Every payload above, as the browser wrote it.
const FROM_THE_BROWSER: [&str; 6] = [OFFER, ANSWER, CANDIDATE, BROADCAST_TEXT, BROADCAST_ALL_BYTES, UNICAST_BYTES];

fn parse(json: &str) -> RelayPayload {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

#[test]
fn every_payload_the_browser_sends_is_written_back_byte_for_byte() {
    for json in FROM_THE_BROWSER {
        assert_eq!(serde_json::to_string(&parse(json)).unwrap(), json);
    }
    let reply: Body = serde_json::from_str(UNICAST_REPLY).unwrap();
    assert_eq!(serde_json::to_string(&reply).unwrap(), UNICAST_REPLY);
}

#[test]
fn signals_parse_into_their_typed_fields() {
    let RelayPayload::Signal(Signal::Description(SessionDescription { kind: SdpType::Offer, sdp: Some(sdp) })) =
        parse(OFFER)
    else {
        panic!("not an offer: {OFFER}");
    };
    assert!(sdp.starts_with("v=0\r\n") && sdp.contains("webrtc-datachannel"), "{sdp}");
    assert!(matches!(parse(ANSWER), RelayPayload::Signal(Signal::Description(d)) if d.kind == SdpType::Answer));

    let RelayPayload::Signal(Signal::Candidate(candidate)) = parse(CANDIDATE) else { panic!("not a candidate") };
    let IceCandidate { candidate, sdp_mid, sdp_m_line_index, username_fragment } = candidate;
    assert!(candidate.starts_with("candidate:") && candidate.contains("127.0.0.1"), "{candidate}");
    assert_eq!((sdp_mid.as_deref(), sdp_m_line_index), (Some("0"), Some(0)));
    assert!(username_fragment.is_some());
}

#[test]
fn text_stays_text_and_bytes_stay_bytes() {
    assert_eq!(parse(BROADCAST_TEXT), RelayPayload::Broadcast(Body::Text("héllo \"quoted\" ☃".into())));
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(parse(BROADCAST_ALL_BYTES), RelayPayload::Broadcast(Body::Bytes(all.clone())));
    // Written by Rust, the same bytes are what the browser wrote.
    assert_eq!(serde_json::to_string(&RelayPayload::Broadcast(Body::from(all))).unwrap(), BROADCAST_ALL_BYTES);
    assert_eq!(parse(UNICAST_BYTES), RelayPayload::Unicast(Body::Bytes(vec![0, 1, 2, 253, 254, 255])));
    let reply: Body = serde_json::from_str(UNICAST_REPLY).unwrap();
    assert_eq!(reply, Body::Bytes(vec![255, 254, 253, 2, 1, 0]));
    // An empty body of either kind is a body.
    for body in [Body::from(""), Body::from(Vec::new())] {
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(serde_json::from_str::<Body>(&json).unwrap(), body, "{json}");
        assert!(body.is_empty());
    }
}

#[test]
fn base64_is_read_as_the_browser_reads_it() {
    // `atob` takes unpadded text too; anything outside the alphabet is no body.
    let body = |json: &str| serde_json::from_str::<Body>(json).ok();
    assert_eq!(body(r#"{"base64":"AAEC/f7/"}"#), Some(Body::Bytes(vec![0, 1, 2, 253, 254, 255])));
    assert_eq!(body(r#"{"base64":"AAE="}"#), Some(Body::Bytes(vec![0, 1])));
    assert_eq!(body(r#"{"base64":"AAE"}"#), Some(Body::Bytes(vec![0, 1])));
    for bad in
        [r#"{"base64":"A*=="}"#, r#"{"base64":"AA-_"}"#, r#"{"base64":7}"#, r#"{"text":null}"#, r#"{"html":"x"}"#]
    {
        assert_eq!(body(bad), None, "{bad}");
    }
}

#[test]
fn a_member_without_webrtc_says_so_in_the_documented_shapes() {
    let declaration = serde_json::to_string(&RelayPayload::Signal(Signal::NoWebRtc)).unwrap();
    assert_eq!(declaration, r#"{"signal":{"webrtc":false}}"#);
    assert_eq!(parse(&declaration), RelayPayload::Signal(Signal::NoWebRtc));
    // Only `false` means it (the browser reads it the same way).
    assert!(serde_json::from_str::<RelayPayload>(r#"{"signal":{"webrtc":true}}"#).is_err());

    let refusal = no_webrtc();
    assert_eq!((refusal.code(), NO_WEBRTC), (-32011, -32011));
    let json: serde_json::Value = serde_json::to_value(&refusal).unwrap();
    assert_eq!(json["code"], -32011);
    assert!(json["message"].is_string());
}

#[test]
fn bodies_measure_utf8_bytes_against_the_browser_limit() {
    assert_eq!(MAX_BODY_BYTES, 256 * 1024 - 6);
    assert_eq!(Body::from("☃").len(), 3);
    assert_eq!(Body::from(vec![0; 5]).len(), 5);
    assert_eq!(Body::from("☃").as_text(), Some("☃"));
    assert_eq!(Body::from(&b"ab"[..]).as_bytes(), b"ab");
}
