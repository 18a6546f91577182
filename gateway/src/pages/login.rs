//! Logging a browser in and out: the login form, its submission, the redirect of pages opened
//! without a token, and remembering a token that came in a page's query string.

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{StatusCode, Uri};

use super::render;
use crate::auth::{self, Auth};
use crate::error::GatewayError;
use crate::response::{self, Response};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    error: Option<&'a str>,
}

/// `GET /login`.
pub fn form(uri: &Uri) -> Result<Response, GatewayError> {
    let next = next_from_query(uri.query());
    render(
        StatusCode::OK,
        "login",
        &LoginPage {
            next: &next,
            error: None,
        },
    )
}

/// `POST /login` with the form fields `token` and `next`.
pub fn submit(auth: &Auth, body: &Bytes) -> Result<Response, GatewayError> {
    let mut token = String::new();
    let mut next = String::from("/");
    for (name, value) in url::form_urlencoded::parse(body) {
        match name.as_ref() {
            "token" => token = value.into_owned(),
            "next" => next = safe_next(&value).to_owned(),
            _ => {}
        }
    }
    if !auth.accepts_token(&token) {
        return render(
            StatusCode::FORBIDDEN,
            "login",
            &LoginPage {
                next: &next,
                error: Some("That token is not valid."),
            },
        );
    }
    // See Other: the browser follows with a GET, so a reload does not resubmit the form.
    Ok(logged_in(
        auth,
        response::redirect(StatusCode::SEE_OTHER, &next),
    ))
}

/// `GET /logout`.
pub fn logout() -> Response {
    let mut response = response::redirect(StatusCode::SEE_OTHER, "/login");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth::logout_cookie());
    response
}

/// A page opened without a valid token goes to the login form, which comes back here after.
pub fn redirect_to_login(uri: &Uri) -> Response {
    let back = uri
        .path_and_query()
        .map(|path| path.as_str())
        .unwrap_or("/");
    let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    response::redirect(StatusCode::FOUND, &format!("/login?next={next}"))
}

/// A page opened with a valid `?token=` sets the login cookie and reloads without the token,
/// so the token does not stay in the address bar or the browser's history.
pub fn remember_query_token(auth: &Auth, uri: &Uri) -> Response {
    let location = match uri.query().and_then(auth::query_without_token) {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_owned(),
    };
    logged_in(auth, response::redirect(StatusCode::FOUND, &location))
}

fn logged_in(auth: &Auth, mut response: Response) -> Response {
    if let Some(cookie) = auth.login_cookie() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn next_from_query(query: Option<&str>) -> String {
    query
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "next")
                .map(|(_, value)| safe_next(&value).to_owned())
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// Where to go after logging in: a path on this gateway only, so a crafted login link cannot
/// send the browser elsewhere.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    if local && !next.chars().any(char::is_control) {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/api/kernels"), "/api/kernels");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example/"), "/");
        assert_eq!(safe_next("/a\r\nSet-Cookie: x"), "/");
    }

    #[test]
    fn a_good_token_sets_the_cookie_and_redirects_to_next() {
        let auth = Auth::new(Some("t0k"));
        let response = submit(&auth, &Bytes::from_static(b"token=t0k&next=%2Fapi")).unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], "/api");
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("cellgate-session="));
    }

    #[test]
    fn a_bad_token_shows_the_form_again() {
        let auth = Auth::new(Some("t0k"));
        let response = submit(&auth, &Bytes::from_static(b"token=nope")).unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!response.headers().contains_key(header::SET_COOKIE));
    }

    #[test]
    fn pages_without_a_token_go_to_login_and_come_back() {
        let uri: Uri = "/?a=1".parse().unwrap();
        let response = redirect_to_login(&uri);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/login?next=%2F%3Fa%3D1"
        );
        let form = form(&"/login?next=%2F%3Fa%3D1".parse().unwrap()).unwrap();
        assert_eq!(form.status(), StatusCode::OK);
    }

    #[test]
    fn a_query_token_becomes_a_cookie_and_leaves_the_url() {
        let auth = Auth::new(Some("t0k"));
        let uri: Uri = "/?token=t0k&tab=kernels".parse().unwrap();
        let response = remember_query_token(&auth, &uri);
        assert_eq!(response.headers()[header::LOCATION], "/?tab=kernels");
        assert!(response.headers().contains_key(header::SET_COOKIE));
    }
}
