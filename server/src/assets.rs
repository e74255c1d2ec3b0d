//! The demo page and the browser client, embedded in the binary.
//!
//! Everything comes from `server/assets/`, inside this crate (so that it
//! packages and builds on its own): the two scripts are minified esbuild
//! bundles, each with its source map (served beside it for devtools), built
//! from `frontend/demo/demo.ts` and `simple/ts/`, and the page's HTML and
//! CSS are copies of `frontend/demo/`'s, all written by `npm --prefix
//! frontend run build` and committed; the frontend test suite fails when any
//! of them is stale.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The demo page; it loads `/demo.css` and `/demo.js`.
const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The demo's script; it imports the client from `/webrtc-p2p.js`, as any site would.
const DEMO_JS: &str = include_str!("../assets/demo.js");
const DEMO_CSS: &str = include_str!("../assets/demo.css");
const DEMO_MAP: &str = include_str!("../assets/demo.js.map");
/// The client: an ES module exporting `SimpleService` and `GroupCapability`.
const CLIENT_JS: &str = include_str!("../assets/webrtc-p2p.js");
const CLIENT_MAP: &str = include_str!("../assets/webrtc-p2p.js.map");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript";
const CSS: &str = "text/css; charset=utf-8";
const SOURCE_MAP: &str = "application/json";

/// `GET /` (the demo), `/demo.js`, `/demo.css` and `/webrtc-p2p.js` (the client).
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { page(HTML, INDEX_HTML) }))
        .route("/demo.js", get(|| async { page(JAVASCRIPT, DEMO_JS) }))
        .route("/demo.css", get(|| async { page(CSS, DEMO_CSS) }))
        .route("/demo.js.map", get(|| async { page(SOURCE_MAP, DEMO_MAP) }))
        .route("/webrtc-p2p.js", get(|| async { client(JAVASCRIPT, CLIENT_JS) }))
        .route("/webrtc-p2p.js.map", get(|| async { client(SOURCE_MAP, CLIENT_MAP) }))
}

/// A file of the demo page, revalidated on every load so that a new binary's page is used at once.
fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// The client module (or its map), importable from any origin.
fn client(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
