//! Dispatching one request: find its route, check the method and the token, and hand it to
//! its handler. Every failure becomes a `{reason, message}` answer here.

use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;

use crate::api::{self, channels, jobs, kernels, kernelspecs};
use crate::auth::Credential;
use crate::cluster;
use crate::error::GatewayError;
use crate::metrics;
use crate::pages::{self, cluster as cluster_page, index, jobs as jobs_page, login, notebook};
use crate::response::{self, Response};
use crate::routes::Route;
use crate::state::{Connection, Gateway};

/// The largest login form accepted; a token is far smaller.
const MAX_FORM_BYTES: usize = 16 << 10;

pub async fn handle(
    gateway: Arc<Gateway>,
    connection: Connection,
    request: Request<Incoming>,
) -> Response {
    match dispatch(&gateway, &connection, request).await {
        Ok(response) => response,
        Err(error) => {
            gateway.metrics.count_error(&error);
            response::error(&error)
        }
    }
}

async fn dispatch(
    gateway: &Gateway,
    connection: &Connection,
    request: Request<Incoming>,
) -> Result<Response, GatewayError> {
    let path = request.uri().path();
    let Some(route) = Route::parse(path) else {
        return Err(GatewayError::RouteNotFound {
            method: request.method().clone(),
            path: path.to_owned(),
        });
    };
    if !route.methods().contains(request.method()) {
        return Err(GatewayError::MethodNotAllowed {
            method: request.method().clone(),
            path: path.to_owned(),
            allowed: route.methods(),
        });
    }
    let credential = if route.is_public() {
        Credential::Open
    } else {
        match gateway
            .auth
            .authenticate(request.headers(), request.uri().query())
        {
            Some(credential) => credential,
            None if route.is_page() => return Ok(login::redirect_to_login(request.uri())),
            None => return Err(GatewayError::Forbidden),
        }
    };
    if route.is_page() && credential == Credential::Query {
        return Ok(login::remember_query_token(&gateway.auth, request.uri()));
    }

    match route {
        Route::Health => Ok(api::health(gateway)),
        Route::Metrics => Ok(metrics::exposition::response(gateway)),
        Route::Login if request.method() == Method::POST => {
            let body = api::read_body(request.into_body(), MAX_FORM_BYTES).await?;
            login::submit(&gateway.auth, &body)
        }
        Route::Login => login::form(request.uri()),
        Route::Logout => Ok(login::logout()),
        Route::Home => index::page(gateway).await,
        Route::JobsPage => jobs_page::page(gateway),
        Route::NotebookPage => notebook::page(gateway).await,
        Route::ClusterPage => cluster_page::page(gateway),
        Route::ClusterSnapshot => Ok(cluster::api::snapshot(gateway)),
        Route::ClusterStream => Ok(cluster::api::stream(gateway)),
        Route::Script(name) => pages::script(&name).ok_or(GatewayError::RouteNotFound {
            method: Method::GET,
            path: format!("/static/{name}"),
        }),
        Route::ApiVersion => Ok(api::version()),
        Route::KernelSpecs => kernelspecs::list(gateway).await,
        Route::KernelSpec(name) => kernelspecs::get(gateway, &name).await,
        Route::Kernels if request.method() == Method::POST => {
            let (parts, body) = request.into_parts();
            let body = api::read_body(body, gateway.max_body_bytes).await?;
            kernels::create(gateway, connection, &parts, body).await
        }
        Route::Kernels => kernels::list(gateway).await,
        Route::Kernel(kernel) | Route::Interrupt(kernel) | Route::Restart(kernel) => {
            let (parts, body) = request.into_parts();
            let body = api::read_body(body, gateway.max_body_bytes).await?;
            kernels::forward(gateway, connection, kernel, &parts, body).await
        }
        Route::Channels(kernel) => {
            channels::open(gateway, connection, kernel, credential, request).await
        }
        Route::NoSuchKernel(kernel_id) => Err(GatewayError::KernelNotFound { kernel_id }),
        Route::Jobs => jobs::forward(gateway, connection, request).await,
    }
}
