//! Token authentication: whether a request carries the gateway token (in the `Authorization`
//! header, the `token` query parameter or the login cookie), and the cookie that remembers a
//! browser after it logged in.

use http::header::{self, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie set by the login page.
pub const COOKIE_NAME: &str = "cellgate-session";

/// A browser stays logged in for 30 days.
const COOKIE_MAX_AGE_SECS: u32 = 30 * 24 * 3600;

/// How a request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Authentication is off: everyone is let in.
    Open,
    Header,
    Query,
    Cookie,
}

/// The gateway's token, and the cookie value derived from it.
#[derive(Clone)]
pub struct Auth {
    secret: Option<Secret>,
}

#[derive(Clone)]
struct Secret {
    token: String,
    /// The cookie holds a digest of the token rather than the token, so a cookie jar never
    /// stores the credential an API client would use. It is derived (not random) so every
    /// gateway replica and every restart accepts the same cookie.
    cookie: String,
}

impl Auth {
    /// `None` turns authentication off.
    pub fn new(token: Option<&str>) -> Auth {
        Auth {
            secret: token.map(|token| Secret {
                token: token.to_owned(),
                cookie: cookie_value_for(token),
            }),
        }
    }

    /// Whether a token is required at all.
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether this request may pass, and by which credential; `None` when it may not.
    pub fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Credential> {
        let Some(secret) = &self.secret else {
            return Some(Credential::Open);
        };
        if header_token(headers).is_some_and(|token| same(token, &secret.token)) {
            return Some(Credential::Header);
        }
        if query_token(query).is_some_and(|token| same(&token, &secret.token)) {
            return Some(Credential::Query);
        }
        if cookie_values(headers, COOKIE_NAME).any(|value| same(value, &secret.cookie)) {
            return Some(Credential::Cookie);
        }
        None
    }

    /// Whether `candidate` is the token, compared in constant time.
    pub fn accepts_token(&self, candidate: &str) -> bool {
        match &self.secret {
            None => true,
            Some(secret) => same(candidate, &secret.token),
        }
    }

    /// The `Set-Cookie` value that logs a browser in; `None` when there is nothing to remember.
    pub fn login_cookie(&self) -> Option<HeaderValue> {
        let secret = self.secret.as_ref()?;
        let cookie = format!(
            "{COOKIE_NAME}={}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; Secure; SameSite=Lax",
            secret.cookie
        );
        // A hex digest and fixed attributes are always a valid header value.
        HeaderValue::from_str(&cookie).ok()
    }
}

/// The `Set-Cookie` value that logs a browser out.
pub fn logout_cookie() -> HeaderValue {
    HeaderValue::from_static("cellgate-session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax")
}

/// The query string without its `token` parameter, so a page reached by a tokened link can
/// redirect to a URL that does not leave the token in the browser's history.
pub fn query_without_token(query: &str) -> Option<String> {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name != "token")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() {
        return None;
    }
    Some(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish(),
    )
}

/// Equality that takes the same time wherever the inputs differ. Both sides are hashed
/// first, so neither the position of the first difference nor the token's length leaks.
fn same(candidate: &str, expected: &str) -> bool {
    let candidate = Sha256::digest(candidate.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    candidate.ct_eq(&expected).into()
}

fn cookie_value_for(token: &str) -> String {
    let digest = Sha256::digest(format!("cellgate-session-v1\0{token}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `Authorization: token T`, as Jupyter clients send it, or `Bearer T`.
fn header_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    known.then(|| token.trim())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// The values of every cookie called `name`, over all `Cookie` headers.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn header_query_and_cookie_each_authenticate() {
        let auth = Auth::new(Some("s3cret"));
        let by_header = headers(&[(header::AUTHORIZATION, "token s3cret")]);
        assert_eq!(
            auth.authenticate(&by_header, None),
            Some(Credential::Header)
        );
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert_eq!(auth.authenticate(&bearer, None), Some(Credential::Header));
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some("a=1&token=s3cret")),
            Some(Credential::Query)
        );
        let set_cookie = auth.login_cookie().unwrap();
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let by_cookie = headers(&[(header::COOKIE, &format!("other=1; {pair}"))]);
        assert_eq!(
            auth.authenticate(&by_cookie, None),
            Some(Credential::Cookie)
        );
    }

    #[test]
    fn wrong_or_missing_tokens_are_refused() {
        let auth = Auth::new(Some("s3cret"));
        let cases = [
            headers(&[(header::AUTHORIZATION, "token wrong")]),
            headers(&[(header::AUTHORIZATION, "token s3cret-and-more")]),
            headers(&[(header::AUTHORIZATION, "Basic s3cret")]),
            headers(&[(header::COOKIE, "cellgate-session=s3cret")]),
            HeaderMap::new(),
        ];
        for case in &cases {
            assert_eq!(auth.authenticate(case, None), None, "{case:?}");
        }
        assert_eq!(auth.authenticate(&HeaderMap::new(), Some("token=")), None);
        assert_eq!(auth.authenticate(&HeaderMap::new(), Some("token=s3")), None);
    }

    #[test]
    fn the_cookie_does_not_contain_the_token() {
        let auth = Auth::new(Some("s3cret"));
        let cookie = auth.login_cookie().unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(!cookie.contains("s3cret"));
        for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
    }

    #[test]
    fn constant_time_comparison_is_exact_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "abc"));
        assert!(Auth::new(Some("t")).accepts_token("t"));
        assert!(!Auth::new(Some("t")).accepts_token("T"));
    }

    #[test]
    fn auth_off_lets_everyone_in_and_sets_no_cookie() {
        let auth = Auth::new(None);
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), None),
            Some(Credential::Open)
        );
        assert!(auth.login_cookie().is_none());
    }

    #[test]
    fn the_token_is_stripped_from_redirect_queries() {
        assert_eq!(query_without_token("token=x"), None);
        assert_eq!(
            query_without_token("a=1&token=x&b=two+words"),
            Some("a=1&b=two+words".to_owned())
        );
    }
}
