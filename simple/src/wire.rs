//! JSON-RPC 2.0 framing shared by both ends of a connection: telling an
//! incoming frame apart (request, notification, response, batch, garbage),
//! building outgoing frames, and running a request through a jsonrpsee
//! method table until its first await.
//!
//! Frames are told apart by shape (`method` vs `result`/`error`), never by id,
//! and nothing below `params`/`result` is parsed here: `data` passes through
//! as raw JSON.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use jsonrpsee::core::server::{ConnectionId, Extensions, MethodCallback, MethodResponse, Methods};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use webrtc_p2p_interfaces::ErrorCode;

/// Standard JSON-RPC codes.
pub mod code {
    /// The frame is not JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// The JSON is not a JSON-RPC request or response.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Missing or ill-typed params.
    pub const INVALID_PARAMS: i32 = -32602;
    /// A fault of the server's own.
    pub const INTERNAL_ERROR: i32 = -32603;
}

/// One incoming frame, borrowed from its text.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A request (`id` is `Some`) or a notification (`id` is `None`).
    Request(Request<'a>),
    /// An answer to one of our own requests.
    Response(Response<'a>),
    /// A batch: its elements, still unparsed.
    Batch(Vec<&'a RawValue>),
    /// Not JSON-RPC; answer with this error and id (null when unknown).
    Invalid {
        /// The message's id, when it had a usable one.
        id: Option<&'a RawValue>,
        /// `PARSE_ERROR` or `INVALID_REQUEST`.
        code: i32,
        /// What was wrong, for the client's developer.
        message: Cow<'static, str>,
    },
}

/// A request or notification.
#[derive(Debug)]
pub struct Request<'a> {
    /// The id exactly as sent (string, any number, or null); `None` for a
    /// notification.
    pub id: Option<&'a RawValue>,
    /// The method name.
    pub method: Cow<'a, str>,
    /// The params as sent (an array or object), if any.
    pub params: Option<&'a RawValue>,
}

/// A response to a request we sent.
#[derive(Debug)]
pub struct Response<'a> {
    /// The id as sent back.
    pub id: &'a RawValue,
    /// `Ok(result)` or `Err(error object)`, both raw.
    pub outcome: Result<&'a RawValue, &'a RawValue>,
}

/// The fields of any JSON-RPC message; which are present decides its kind.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    // Raw, so that a request whose method is not a string still has its id
    // read (and echoed in the error).
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    // `Some(null)` must stay apart from a missing id: the first is a request
    // to answer, the second a notification.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

/// A usable request id: a string, a number or null.
fn valid_id(raw: &RawValue) -> bool {
    matches!(first_byte(raw), b'"' | b'-' | b'0'..=b'9' | b'n')
}

fn invalid<'a>(id: Option<&'a RawValue>, message: &'static str) -> Incoming<'a> {
    Incoming::Invalid { id: id.filter(|id| valid_id(id)), code: code::INVALID_REQUEST, message: message.into() }
}

/// Tells what a frame is. Never fails: garbage becomes [`Incoming::Invalid`].
pub fn classify(text: &str) -> Incoming<'_> {
    if text.trim_start().starts_with('[') {
        return match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => Incoming::Batch(items),
            Err(e) => parse_failure(e),
        };
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(envelope) => classify_envelope(envelope),
        Err(e) => parse_failure(e),
    }
}

/// Tells what one element of a batch is.
pub fn classify_item(item: &RawValue) -> Incoming<'_> {
    match serde_json::from_str::<Envelope<'_>>(item.get()) {
        Ok(envelope) => classify_envelope(envelope),
        // The batch parsed, so the element is JSON: it is just not a message.
        Err(_) => invalid(None, "not a JSON-RPC message"),
    }
}

fn parse_failure(e: serde_json::Error) -> Incoming<'static> {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Incoming::Invalid { id: None, code: code::PARSE_ERROR, message: format!("parse error: {e}").into() }
        }
        Category::Data => invalid(None, "not a JSON-RPC message"),
    }
}

fn classify_envelope(e: Envelope<'_>) -> Incoming<'_> {
    let Some(method) = e.method else {
        return classify_response(e);
    };
    if e.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return invalid(e.id, "jsonrpc must be \"2.0\"");
    }
    if e.id.is_some_and(|id| !valid_id(id)) {
        return invalid(None, "id must be a string, a number or null");
    }
    let Some(method) = method_name(method) else {
        return invalid(e.id, "method must be a string");
    };
    if e.params.is_some_and(|p| !matches!(first_byte(p), b'[' | b'{')) {
        return invalid(e.id, "params must be an array or an object");
    }
    Incoming::Request(Request { id: e.id, method, params: e.params })
}

/// A message without `method` is shaped like a response, so its id belongs
/// to the other side's requests: whatever is wrong with it, nothing is sent
/// back carrying that id (the other side would take it for the answer to
/// its own call). A malformed one is a response carrying the InvalidAnswer
/// error, so that the call it answers, if any, ends at once with it.
fn classify_response(e: Envelope<'_>) -> Incoming<'_> {
    let Some(id) = e.id else {
        return invalid(None, "a message needs a method, or an id with a result or an error");
    };
    let jsonrpc = e.jsonrpc.map(RawValue::get) == Some("\"2.0\"");
    let outcome = match (e.result, e.error) {
        (Some(result), None) if jsonrpc => Ok(result),
        // An error object passes through as it is, whatever its members.
        (None, Some(error)) if jsonrpc && first_byte(error) == b'{' => Err(error),
        _ => Err(&**INVALID_ANSWER),
    };
    Incoming::Response(Response { id, outcome })
}

/// The error object of `ErrorCode::InvalidAnswer`.
static INVALID_ANSWER: LazyLock<Box<RawValue>> = LazyLock::new(|| {
    let error = ErrorObjectOwned::from(ErrorCode::InvalidAnswer);
    serde_json::value::to_raw_value(&error).unwrap_or_else(|_| RawValue::NULL.to_owned())
});

/// The method name, when `method` is a JSON string.
fn method_name(method: &RawValue) -> Option<Cow<'_, str>> {
    if first_byte(method) != b'"' {
        return None;
    }
    // Borrowed unless it has escapes.
    match serde_json::from_str::<&str>(method.get()) {
        Ok(name) => Some(Cow::Borrowed(name)),
        Err(_) => serde_json::from_str::<String>(method.get()).ok().map(Cow::Owned),
    }
}

/// Appends `{"jsonrpc":"2.0","id":<id>`.
fn push_head(out: &mut String, id: &str) {
    out.push_str(HEAD);
    out.push_str(id);
}

/// An error response with the given id (null when `None`).
pub fn error_frame(id: Option<&RawValue>, code: i32, message: &str) -> String {
    let error = ErrorObjectOwned::owned(code, message, None::<()>);
    let error = serde_json::to_string(&error).unwrap_or_else(|_| String::from("null"));
    let mut out = String::with_capacity(64 + error.len());
    push_head(&mut out, id.map_or("null", RawValue::get));
    out.push_str(",\"error\":");
    out.push_str(&error);
    out.push('}');
    out
}

/// A request (with `id`) or notification (without) to send.
pub fn request_frame(id: Option<&str>, method: &str, params: Option<&RawValue>) -> String {
    request_frame_with(id.map_or(FrameId::None, FrameId::Raw), method, &[params.map_or("[]", RawValue::get)])
}

/// A notification with params as JSON text (an array or object).
pub fn notification_frame(method: &str, params: &str) -> String {
    request_frame_with(FrameId::None, method, &[params])
}

/// A response frame again, as the client sent it (its id, its result or
/// error object, both raw): what goes to the node that made the call.
pub fn response_frame(response: &Response<'_>) -> String {
    let (key, value) = match response.outcome {
        Ok(result) => ("result", result),
        Err(error) => ("error", error),
    };
    format!(r#"{{"jsonrpc":"2.0","id":{},"{key}":{}}}"#, response.id.get(), value.get())
}

/// A request to a client with our own id `"s<n>"`, written straight into the
/// frame (no id string of its own on this hot path).
pub fn call_frame(id: u64, method: &str, params: &str) -> String {
    request_frame_with(FrameId::Ours(id), method, &[params])
}

/// [`call_frame`] with params given in pieces, written one after the other
/// (JSON text together): a relay's params without a string of their own.
pub fn call_frame_parts(id: u64, method: &str, params: &[&str]) -> String {
    request_frame_with(FrameId::Ours(id), method, params)
}

/// The id of an outgoing request.
enum FrameId<'a> {
    /// A notification.
    None,
    /// JSON as given.
    Raw(&'a str),
    /// One of ours: `"s<n>"`.
    Ours(u64),
}

fn request_frame_with(id: FrameId<'_>, method: &str, params: &[&str]) -> String {
    // Method names are ours and plain; escaping keeps any other name valid JSON.
    let escaped;
    let method = if method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        method
    } else {
        escaped = serde_json::to_string(method).unwrap_or_else(|_| String::from("\"\""));
        &escaped[1..escaped.len() - 1]
    };
    let head = match id {
        FrameId::None => NOTIFICATION_HEAD.len(),
        FrameId::Raw(id) => HEAD.len() + id.len(),
        FrameId::Ours(n) => HEAD.len() + "\"s\"".len() + decimal_digits(n),
    };
    // Exactly the frame's size: the writer hands it to the socket without
    // copying, reallocating or allocating (a `Vec` whose length is its
    // capacity becomes `Bytes` as it is).
    let params_len: usize = params.iter().map(|part| part.len()).sum();
    let mut out = String::with_capacity(head + METHOD.len() + method.len() + PARAMS.len() + params_len + 1);
    match id {
        FrameId::None => out.push_str(NOTIFICATION_HEAD),
        FrameId::Raw(id) => push_head(&mut out, id),
        FrameId::Ours(n) => {
            push_head(&mut out, "\"s");
            let _ = write!(out, "{n}\"");
        }
    }
    out.push_str(METHOD);
    out.push_str(method);
    out.push_str(PARAMS);
    for part in params {
        out.push_str(part);
    }
    out.push('}');
    out
}

/// How a notification starts.
const NOTIFICATION_HEAD: &str = "{\"jsonrpc\":\"2.0\"";
/// What comes before a request's method name.
const METHOD: &str = ",\"method\":\"";
/// What comes between a request's method name and its params.
const PARAMS: &str = "\",\"params\":";

/// The digits of `n` in decimal.
fn decimal_digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The head jsonrpsee writes for `Id::Null`; [`respond`] puts the caller's
/// raw id in its place so that any id (negative and fractional numbers too,
/// which jsonrpsee's `Id` cannot hold) is echoed exactly as sent.
const NULL_ID_HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":null";

/// The response frame for a method's answer, with the caller's raw id.
fn respond(response: MethodResponse, id: &RawValue) -> String {
    let json = response.into_json();
    let Some(rest) = json.get().strip_prefix(NULL_ID_HEAD) else {
        // Only if jsonrpsee ever changes its layout; a unit test pins it.
        return match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json.get()) {
            Ok(mut object) => {
                object.insert("id".into(), serde_json::from_str(id.get()).unwrap_or_default());
                serde_json::to_string(&object).unwrap_or_default()
            }
            Err(_) => error_frame(Some(id), code::INTERNAL_ERROR, "internal error"),
        };
    };
    let mut out = String::with_capacity(NULL_ID_HEAD.len() + id.get().len() + rest.len());
    push_head(&mut out, id.get());
    out.push_str(rest);
    out
}

/// A response frame to send, and its error code when it is an error: what
/// metrics count, carried along rather than read back from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The whole frame.
    pub frame: String,
    /// The JSON-RPC error code, when the frame is an error response.
    pub error: Option<i32>,
}

impl Reply {
    /// An error response with the given id (null when `None`).
    pub fn error(id: Option<&RawValue>, code: i32, message: &str) -> Self {
        Self { frame: error_frame(id, code, message), error: Some(code) }
    }
}

/// A started request: finished at once, or still running.
pub enum Started {
    /// The response (`None` for a notification).
    Done(Option<Reply>),
    /// A future for the response; the caller spawns it.
    Running(Pin<Box<dyn Future<Output = Option<Reply>> + Send>>),
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(frame) => f.debug_tuple("Done").field(frame).finish(),
            Self::Running(_) => f.write_str("Running"),
        }
    }
}

/// Put in the `Extensions` of a request that came in a batch (`resume`
/// refuses to run there).
#[derive(Debug, Clone, Copy)]
pub struct InBatch;

/// Marks a call's [`Extensions`] when it came as a notification, so that a
/// method can act differently (a `relay` notification is forwarded as one).
#[derive(Debug, Clone, Copy)]
pub struct IsNotification;

/// A call's id as the client wrote it, in its [`Extensions`], so that a
/// `relay` can be found again by `$/cancelRequest`.
#[derive(Debug, Clone)]
pub struct RequestId(pub Box<RawValue>);

/// Runs `request` through `methods` up to its first await, on the caller's
/// stack. Whatever a method does before awaiting (such as queueing a relay to
/// its target) therefore happens in the order requests arrived; a method
/// still waiting after that is handed back to be spawned.
pub fn start(methods: &Methods, request: Request<'_>, conn: ConnectionId, mut ext: Extensions) -> Started {
    let passthrough = Passthrough::default();
    ext.insert(passthrough.clone());
    let Some((_, callback)) = methods.method_with_name(&request.method) else {
        return Started::Done(request.id.map(|id| Reply::error(Some(id), code::METHOD_NOT_FOUND, "method not found")));
    };
    let (id, echo) = match request.id {
        None => {
            ext.insert(IsNotification);
            (Id::Null, Echo::Nothing)
        }
        Some(raw) => {
            ext.insert(RequestId(raw.to_owned()));
            match plain_number(raw) {
                Some(n) => (Id::Number(n), Echo::Written(n)),
                None => (Id::Null, Echo::Raw(raw.to_owned())),
            }
        }
    };
    let params = Params::new(request.params.map(RawValue::get)).into_owned();
    // A handler that panics must cost its caller one -32603, not the whole
    // connection: unwinding through the read loop would skip its cleanup.
    let panicked = |echo: Echo| finish_panicked(request.id, echo);
    let mut future = match callback {
        MethodCallback::Sync(cb) => {
            return match catch_unwind(AssertUnwindSafe(|| cb(id, params, usize::MAX, ext))) {
                Ok(response) => Started::Done(finish(response, echo, &passthrough)),
                Err(_) => Started::Done(panicked(echo)),
            };
        }
        MethodCallback::Async(cb) => match catch_unwind(AssertUnwindSafe(|| cb(id, params, conn, usize::MAX, ext))) {
            Ok(future) => future,
            Err(_) => return Started::Done(panicked(echo)),
        },
        MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_) => {
            return Started::Done(
                request.id.map(|id| Reply::error(Some(id), code::METHOD_NOT_FOUND, "method not found")),
            );
        }
    };
    // A first poll with a no-op waker is sound: a future left pending is
    // spawned, and a spawned task is always polled once more, which sees any
    // progress made in between.
    let first = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut Context::from_waker(Waker::noop()))));
    match first {
        Ok(Poll::Ready(response)) => Started::Done(finish(response, echo, &passthrough)),
        Ok(Poll::Pending) => {
            let id = request.id.map(RawValue::to_owned);
            Started::Running(Box::pin(async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(response) => finish(response, echo, &passthrough),
                    Err(_) => finish_panicked(id.as_deref(), echo),
                }
            }))
        }
        Err(_) => Started::Done(panicked(echo)),
    }
}

/// Runs a method's own future, `answer`, up to its first await, as [`start`]
/// runs jsonrpsee's: on the caller's stack, its answer framed by [`reply`],
/// a panic answered with -32603. One allocation: the future and the id it
/// answers live in one box.
pub fn start_future<F>(id: Option<Box<RawValue>>, answer: F) -> Started
where
    F: Future<Output = Result<RawAnswer, ErrorObjectOwned>> + Send + 'static,
{
    let mut future = Box::pin(async move {
        match AssertUnwindSafe(answer).catch_unwind().await {
            Ok(answer) => reply(id.as_deref(), answer),
            Err(_) => id.as_deref().map(|id| handler_failed(Some(id))),
        }
    });
    // A first poll with a no-op waker is sound, as in `start`.
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(reply) => Started::Done(reply),
        Poll::Pending => Started::Running(future),
    }
}

/// A method's answer to `id` (none for a notification), framed byte for
/// byte as [`start`] frames it: a raw answer (a result, or any error
/// object) goes in exactly as it is, as through a [`Passthrough`]; an
/// error of ours as jsonrpsee writes it.
pub fn reply(id: Option<&RawValue>, answer: Result<RawAnswer, ErrorObjectOwned>) -> Option<Reply> {
    match answer {
        Ok(raw) => reply_ref(id, Ok(raw.as_deref().map_err(|error| &**error))),
        Err(error) => reply_ref(id, Err(error)),
    }
}

/// [`reply`] for an answer borrowed from the frame that brought it: copied
/// once, straight into the reply.
pub fn reply_ref(id: Option<&RawValue>, answer: Result<RawAnswerRef<'_>, ErrorObjectOwned>) -> Option<Reply> {
    let id = id?;
    Some(match answer {
        Ok(answer) => raw_reply(id.get(), answer),
        Err(error) => {
            let code = error.code();
            Reply { frame: respond(MethodResponse::error(Id::Null, error), id), error: Some(code) }
        }
    })
}

/// The answer for a request whose handler panicked.
fn finish_panicked(id: Option<&RawValue>, echo: Echo) -> Option<Reply> {
    match echo {
        Echo::Nothing => None,
        _ => Some(handler_failed(id)),
    }
}

fn handler_failed(id: Option<&RawValue>) -> Reply {
    Reply::error(id, code::INTERNAL_ERROR, "internal error: the handler failed")
}

/// How a response gets the caller's id.
enum Echo {
    /// A notification: no response.
    Nothing,
    /// jsonrpsee wrote it (a plain number, which it writes exactly as sent):
    /// its frame goes out as it is, uncopied.
    Written(u64),
    /// Anything else: jsonrpsee wrote `null`, [`respond`] puts this in.
    Raw(Box<RawValue>),
}

/// The id as a `u64` when jsonrpsee's `Id::Number` writes it back
/// character for character: digits only, no leading zero.
fn plain_number(raw: &RawValue) -> Option<u64> {
    let digits = raw.get();
    let plain = digits.bytes().all(|b| b.is_ascii_digit()) && (digits.len() == 1 || !digits.starts_with('0'));
    if plain { digits.parse().ok() } else { None }
}

fn finish(response: MethodResponse, echo: Echo, passthrough: &Passthrough) -> Option<Reply> {
    if let Some(answer) = passthrough.take() {
        let answer = answer.as_deref().map_err(|error| &**error);
        return match echo {
            Echo::Nothing => None,
            Echo::Written(n) => Some(raw_reply(&n.to_string(), answer)),
            Echo::Raw(id) => Some(raw_reply(id.get(), answer)),
        };
    }
    let error = response.as_error_code();
    let frame = match echo {
        Echo::Nothing => return None,
        Echo::Written(_) => Box::<str>::from(response.into_json()).into_string(),
        Echo::Raw(id) => respond(response, &id),
    };
    Some(Reply { frame, error })
}

/// A peer's answer: its result or its error object, both kept raw.
pub type RawAnswer = Result<Box<RawValue>, Box<RawValue>>;

/// A [`RawAnswer`] borrowed from the frame that brought it.
pub type RawAnswerRef<'a> = Result<&'a RawValue, &'a RawValue>;

/// The answer a method wants sent exactly as it is (a raw result, or any
/// error object) in place of what it returns through jsonrpsee, whose error
/// type holds only `code`, `message` and `data`: how a relay passes its
/// target's answer to the caller unchanged, copied once. Every request's
/// `Extensions` has one.
#[derive(Debug, Clone, Default)]
pub struct Passthrough(Arc<Mutex<Option<RawAnswer>>>);

impl Passthrough {
    /// Sends `answer` instead of the method's return value.
    pub fn set(&self, answer: RawAnswer) {
        *self.lock() = Some(answer);
    }

    fn take(&self) -> Option<RawAnswer> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RawAnswer>> {
        // One assignment or take under the lock: poisoning is moot.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The response frame for a raw answer.
fn raw_reply(id: &str, answer: RawAnswerRef<'_>) -> Reply {
    let (member, raw, error) = match answer {
        Ok(result) => ("result", result, None),
        Err(error) => ("error", error, Some(error_code(error))),
    };
    // Exactly the frame's size, as in `request_frame_with`.
    let mut out = String::with_capacity(HEAD.len() + id.len() + member.len() + 4 + raw.get().len() + 1);
    push_head(&mut out, id);
    out.push_str(",\"");
    out.push_str(member);
    out.push_str("\":");
    out.push_str(raw.get());
    out.push('}');
    Reply { frame: out, error }
}

/// An error object's code for metrics; one that is not a 32-bit integer
/// (a peer's own error passes through as it is) counts as 0, no code of ours.
fn error_code(error: &RawValue) -> i32 {
    #[derive(Deserialize)]
    struct Code {
        code: Option<serde_json::Number>,
    }
    serde_json::from_str::<Code>(error.get())
        .ok()
        .and_then(|c| c.code)
        .and_then(|n| n.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

/// The id of a response frame this module wrote (`{"jsonrpc":"2.0","id":…`),
/// to answer in its place when it cannot be sent.
pub fn response_id(frame: &str) -> Option<&RawValue> {
    let rest = frame.strip_prefix(HEAD)?;
    serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>().next()?.ok()
}

/// How every frame this module writes starts, up to the id.
const HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":";

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn request_notification_and_response_are_told_apart_by_shape() {
        let Incoming::Request(r) = classify(r#"{"jsonrpc":"2.0","id":-1.5,"method":"join","params":["x"]}"#) else {
            panic!()
        };
        assert_eq!((r.id.unwrap().get(), &*r.method, r.params.unwrap().get()), ("-1.5", "join", r#"["x"]"#));

        let Incoming::Request(n) = classify(r#"{"jsonrpc":"2.0","method":"relay","params":{}}"#) else { panic!() };
        assert!(n.id.is_none());

        let Incoming::Request(null_id) = classify(r#"{"jsonrpc":"2.0","method":"init","id":null}"#) else { panic!() };
        assert_eq!(null_id.id.unwrap().get(), "null");

        let Incoming::Response(ok) = classify(r#"{"jsonrpc":"2.0","id":"s1","result":null}"#) else { panic!() };
        assert_eq!(ok.outcome.unwrap().get(), "null");

        let Incoming::Response(err) = classify(r#"{"jsonrpc":"2.0","id":"s1","error":{"code":1,"message":"x"}}"#)
        else {
            panic!()
        };
        assert!(err.outcome.is_err());

        let Incoming::Batch(items) = classify(" [1, {}]") else { panic!() };
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn garbage_is_a_parse_error_and_non_messages_are_invalid_requests() {
        for (text, want) in [
            ("{", code::PARSE_ERROR),
            ("nope", code::PARSE_ERROR),
            ("[1,", code::PARSE_ERROR),
            ("42", code::INVALID_REQUEST),
            (r#"{"jsonrpc":"1.0","method":"init","id":1}"#, code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","method":1,"id":1}"#, code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","method":"init","id":{}}"#, code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","method":"init","id":1,"params":3}"#, code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0"}"#, code::INVALID_REQUEST),
        ] {
            match classify(text) {
                Incoming::Invalid { code, .. } => assert_eq!(code, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_request_whose_method_is_not_a_string_has_its_id_echoed() {
        let Incoming::Invalid { id, code, .. } = classify(r#"{"jsonrpc":"2.0","method":1,"id":"a"}"#) else { panic!() };
        assert_eq!((id.map(RawValue::get), code), (Some(r#""a""#), code::INVALID_REQUEST));
        let Incoming::Request(r) = classify(r#"{"jsonrpc":"2.0","method":"in\u0069t","id":1}"#) else { panic!() };
        assert_eq!(r.method, "init");
    }

    #[test]
    fn a_malformed_response_answers_its_call_with_invalid_answer_and_is_never_answered() {
        for text in [
            r#"{"jsonrpc":"2.0","id":"s1"}"#,
            r#"{"jsonrpc":"2.0","id":"s1","result":null,"error":{"code":1,"message":"x"}}"#,
            r#"{"id":"s1","result":1}"#,
            r#"{"jsonrpc":"2.0","id":"s1","error":"oops"}"#,
        ] {
            let Incoming::Response(response) = classify(text) else { panic!("{text}") };
            assert_eq!(response.id.get(), r#""s1""#);
            let error: ErrorObjectOwned = serde_json::from_str(response.outcome.unwrap_err().get()).unwrap();
            assert_eq!(error.code(), ErrorCode::InvalidAnswer.code(), "{text}");
        }
        let odd = r#"{"jsonrpc":"2.0","id":"s1","error":{"code":1.5,"extra":true}}"#;
        let Incoming::Response(response) = classify(odd) else { panic!() };
        assert_eq!(response.outcome.unwrap_err().get(), r#"{"code":1.5,"extra":true}"#, "any error object passes");
    }

    #[test]
    fn response_id_reads_the_id_of_our_frames() {
        let frame = error_frame(Some(&raw(r#""x,]}""#)), -1, "m");
        assert_eq!(response_id(&frame).map(RawValue::get), Some(r#""x,]}""#));
        assert_eq!(response_id(r#"{"jsonrpc":"2.0","id":17,"result":1}"#).map(RawValue::get), Some("17"));
        assert!(response_id("[1]").is_none());
    }

    #[test]
    fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
        let bomb = "[".repeat(100_000);
        assert!(matches!(classify(&bomb), Incoming::Invalid { code: code::PARSE_ERROR, .. }));
        let bomb = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"relay","params":{}"#, "[".repeat(100_000));
        assert!(matches!(classify(&bomb), Incoming::Invalid { code: code::PARSE_ERROR, .. }));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_error_and_nothing_else_breaks() {
        let mut module = jsonrpsee::RpcModule::new(());
        module.register_method::<Result<(), ErrorObjectOwned>, _>("sync", |_, _, _| panic!("sync")).unwrap();
        module
            .register_async_method::<Result<(), ErrorObjectOwned>, _, _>("early", |_, _, _| async { panic!("early") })
            .unwrap();
        module
            .register_async_method::<Result<(), ErrorObjectOwned>, _, _>("late", |_, _, _| async {
                tokio::task::yield_now().await;
                panic!("late")
            })
            .unwrap();
        let methods: Methods = module.into();
        for method in ["sync", "early", "late"] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":"x","method":"{method}"}}"#);
            let Incoming::Request(request) = classify(&text) else { panic!() };
            let frame = match start(&methods, request, ConnectionId(0), Extensions::new()) {
                Started::Done(frame) => frame,
                Started::Running(future) => future.await,
            };
            let reply = frame.unwrap();
            assert_eq!(reply.error, Some(code::INTERNAL_ERROR), "{method}");
            let answer: serde_json::Value = serde_json::from_str(&reply.frame).unwrap();
            assert_eq!(answer["id"], "x", "{method}");
            assert_eq!(answer["error"]["code"], code::INTERNAL_ERROR, "{method}");
        }
    }

    #[test]
    fn jsonrpsee_response_layout_is_what_respond_expects() {
        let response =
            MethodResponse::response(Id::Null, jsonrpsee::core::server::ResponsePayload::success(7), usize::MAX);
        assert!(response.as_json().get().starts_with(NULL_ID_HEAD), "{}", response.as_json().get());
        let frame = respond(response, &raw("-12.5e3"));
        assert_eq!(frame, r#"{"jsonrpc":"2.0","id":-12.5e3,"result":7}"#);
    }

    #[test]
    fn built_frames_are_valid_json_rpc() {
        let id = raw(r#""a\"b""#);
        let frame = error_frame(Some(&id), -32003, "group not found");
        assert_eq!(frame, r#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":-32003,"message":"group not found"}}"#);
        let params = raw("[1]");
        assert_eq!(
            request_frame(Some("\"s1\""), "relay", Some(&params)),
            r#"{"jsonrpc":"2.0","id":"s1","method":"relay","params":[1]}"#
        );
        assert_eq!(request_frame(None, "member_left", None), r#"{"jsonrpc":"2.0","method":"member_left","params":[]}"#);
        assert_eq!(call_frame(7, "relay", "[1]"), r#"{"jsonrpc":"2.0","id":"s7","method":"relay","params":[1]}"#);
        assert_eq!(request_frame(None, "a\"b", None), r#"{"jsonrpc":"2.0","method":"a\"b","params":[]}"#);
    }

    #[test]
    fn only_ids_jsonrpsee_writes_back_exactly_are_handed_to_it() {
        assert_eq!(plain_number(&raw("0")), Some(0));
        assert_eq!(plain_number(&raw("18446744073709551615")), Some(u64::MAX));
        for id in ["-1", "1.5", "1e3", "18446744073709551616", r#""7""#, "null"] {
            assert_eq!(plain_number(&raw(id)), None, "{id}");
        }
    }
}
