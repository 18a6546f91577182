//! `GET /jobs`: the job manager, a page whose script (`gateway/static/jobs.js`, served at
//! `/static/jobs.js`) submits uploads, programs and command lines, lists jobs with their state
//! and node, cancels and deletes them, and shows every node's load, all through the JSON API.

use askama::Template;
use cellgate_protocol::job::{job_images, BATCH_LANGUAGES};
use http::StatusCode;

use super::render;
use crate::error::GatewayError;
use crate::response::Response;
use crate::state::Gateway;

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    /// An empty first choice lets the runner pick the language from the file's extension.
    languages: Vec<&'static str>,
    images: Vec<&'static str>,
    auth_enabled: bool,
    version: &'static str,
}

pub fn page(gateway: &Gateway) -> Result<Response, GatewayError> {
    let languages = std::iter::once("")
        .chain(BATCH_LANGUAGES.iter().map(|(language, _)| *language))
        .collect();
    let page = JobsPage {
        languages,
        images: job_images(),
        auth_enabled: gateway.auth.is_enabled(),
        version: env!("CARGO_PKG_VERSION"),
    };
    render(StatusCode::OK, "jobs", &page)
}
