//! The web pages a person sees: the home page ([`index`]), the notebook editor
//! ([`notebook`]), the job manager ([`jobs`]), the cluster dashboard ([`cluster`]) and
//! logging in and out ([`login`]).
//! Templates live in `gateway/templates/` and are compiled in by askama; the pages' scripts
//! live in `gateway/static/` and are compiled in too, served at `/static/NAME`.

pub mod cluster;
pub mod index;
pub mod jobs;
pub mod login;
pub mod notebook;

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;

use crate::error::GatewayError;
use crate::response::{self, Response};

/// Renders `template` as an HTML response; `page` names it in the error.
fn render(
    status: StatusCode,
    page: &'static str,
    template: &impl Template,
) -> Result<Response, GatewayError> {
    let html = template
        .render()
        .map_err(|source| GatewayError::Template { page, source })?;
    Ok(response::html(status, html))
}

/// The pages' scripts, by the name they are served under.
const SCRIPTS: [(&str, &str); 4] = [
    ("cluster.js", include_str!("../../static/cluster.js")),
    ("common.js", include_str!("../../static/common.js")),
    ("jobs.js", include_str!("../../static/jobs.js")),
    ("notebook.js", include_str!("../../static/notebook.js")),
];

/// Whether `/static/NAME` is one of the scripts.
pub fn is_script(name: &str) -> bool {
    SCRIPTS.iter().any(|(known, _)| *known == name)
}

/// `GET /static/NAME`: public, since a script holds nothing secret; revalidated on every
/// load, since a new gateway version may change a script along with its page.
pub fn script(name: &str) -> Option<Response> {
    let (_, text) = SCRIPTS.iter().find(|(known, _)| *known == name)?;
    let mut answer = response::with_type(
        StatusCode::OK,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
        Bytes::from_static(text.as_bytes()),
    );
    let headers = answer.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(answer)
}
