//! `GET /notebook`: the notebook editor. The page lists the kernel specs on offer; its script
//! (`gateway/static/notebook.js`) starts a kernel through `POST /api/kernels`, runs cells over
//! the kernel's websocket, and keeps the notebook in the browser.

use askama::Template;
use http::StatusCode;

use super::render;
use crate::api::kernelspecs;
use crate::error::GatewayError;
use crate::response::Response;
use crate::state::Gateway;

#[derive(Template)]
#[template(path = "notebook.html")]
struct NotebookPage {
    kernelspecs: Vec<SpecChoice>,
    default_kernel: String,
    auth_enabled: bool,
}

struct SpecChoice {
    name: String,
    display_name: String,
}

pub async fn page(gateway: &Gateway) -> Result<Response, GatewayError> {
    // Without specs the page still renders and says so: the runners may come back.
    let (kernelspecs, default_kernel) = match kernelspecs::gather(gateway).await {
        Ok(specs) => {
            let mut choices: Vec<SpecChoice> = specs
                .kernelspecs
                .into_values()
                .map(|spec| SpecChoice {
                    name: spec.name,
                    display_name: spec.spec.display_name,
                })
                .collect();
            choices.sort_by(|a, b| a.display_name.cmp(&b.display_name));
            (choices, specs.default)
        }
        Err(error) => {
            tracing::warn!(error = %error.client_message(), "no kernel specs for the notebook page");
            (Vec::new(), String::new())
        }
    };
    let page = NotebookPage {
        kernelspecs,
        default_kernel,
        auth_enabled: gateway.auth.is_enabled(),
    };
    render(StatusCode::OK, "notebook", &page)
}
