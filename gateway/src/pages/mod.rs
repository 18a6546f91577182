//! The web pages a person sees: the home page ([`index`]), the job manager ([`jobs`]) and
//! logging in and out ([`login`]).
//! Templates live in `gateway/templates/` and are compiled in by askama.

pub mod index;
pub mod jobs;
pub mod login;

use askama::Template;
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
