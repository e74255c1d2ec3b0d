//! Which browser origins may open `/ws`. Browsers always send `Origin` with
//! a WebSocket upgrade and let any page connect anywhere, so this check is
//! what stops another site's page from using a visitor's browser against
//! this server. Non-browser clients send no `Origin` (or any they like), so
//! it is no authentication.

use axum::http::HeaderValue;

/// The `--allowed-origin` list and the `--require-origin` switch.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    /// Allowed origins, normalised; empty: any origin.
    allowed: Vec<String>,
    /// Whether an upgrade without `Origin` is refused.
    require: bool,
}

/// An origin as browsers serialise it: lowercase, no trailing slash.
fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl OriginPolicy {
    pub(crate) fn new(allowed: &[String], require: bool) -> Self {
        Self { allowed: allowed.iter().map(|o| normalise(o)).collect(), require }
    }

    /// Whether an upgrade carrying this `Origin` header (or none) may proceed.
    pub(crate) fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else { return !self.require };
        if self.allowed.is_empty() {
            return true;
        }
        // A header that is not visible ASCII is no origin a browser sends.
        origin.to_str().is_ok_and(|o| self.allowed.contains(&normalise(o)))
    }
}

/// Checks an `--allowed-origin` value: `scheme://host[:port]`, nothing more.
pub(crate) fn parse(value: &str) -> Result<String, String> {
    let (scheme, rest) = value.split_once("://").ok_or("an origin is scheme://host[:port]")?;
    let valid_scheme = !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let rest = rest.trim_end_matches('/');
    if !valid_scheme || rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("{value:?} is not an origin (scheme://host[:port], no path)"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn only_listed_origins_pass_when_there_is_a_list() {
        let policy = OriginPolicy::new(&["https://App.example/".into(), "http://localhost:8080".into()], false);
        assert!(policy.allows(Some(&header("https://app.example"))));
        assert!(policy.allows(Some(&header("http://localhost:8080"))));
        assert!(!policy.allows(Some(&header("http://localhost:8081"))));
        assert!(!policy.allows(Some(&header("https://app.example.evil"))));
        assert!(!policy.allows(Some(&header("null"))));
        assert!(policy.allows(None), "non-browser clients pass unless --require-origin");
        assert!(!OriginPolicy::new(&[], true).allows(None));
        assert!(OriginPolicy::new(&[], false).allows(Some(&header("https://anyone"))));
    }

    #[test]
    fn configured_origins_must_be_origins() {
        assert!(parse("https://app.example").is_ok());
        assert!(parse("http://127.0.0.1:3001/").is_ok());
        for bad in ["app.example", "https://", "https://a.example/path", "://x", "https://u@x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
