//! `GET /api/cluster`, the cluster snapshot as JSON, and `GET /api/cluster/stream`, the same
//! snapshot as server-sent events: one at once and one after every sample, until the client
//! goes or the gateway stops. The page uses the stream; scripts and tests use the snapshot.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::header::{self, HeaderValue};
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::balancer::Balancer;
use crate::error::BoxError;
use crate::response::{self, Response};
use crate::state::Gateway;

pub fn snapshot(gateway: &Gateway) -> Response {
    let mut answer = response::json(StatusCode::OK, &gateway.cluster.snapshot(&gateway.balancer));
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// What one stream holds between two events.
struct Streaming {
    cluster: Arc<Cluster>,
    balancer: Arc<Balancer>,
    samples: watch::Receiver<u64>,
    stopping: CancellationToken,
    first: bool,
}

pub fn stream(gateway: &Gateway) -> Response {
    let streaming = Streaming {
        cluster: gateway.cluster.clone(),
        balancer: gateway.balancer.clone(),
        samples: gateway.cluster.subscribe(),
        stopping: gateway.tasks.stopping().clone(),
        first: true,
    };
    let events = stream::unfold(streaming, |mut streaming| async move {
        if !streaming.first {
            tokio::select! {
                () = streaming.stopping.cancelled() => return None,
                changed = streaming.samples.changed() => changed.ok()?,
            }
        }
        streaming.first = false;
        let snapshot = streaming.cluster.snapshot(&streaming.balancer);
        let frame = match serde_json::to_string(&snapshot) {
            Ok(json) => Ok(Frame::data(Bytes::from(format!(
                "event: snapshot\ndata: {json}\n\n"
            )))),
            Err(source) => Err(BoxError::from(source)),
        };
        Some((frame, streaming))
    });
    let mut answer = http::Response::new(StreamBody::new(events).boxed_unsync());
    *answer.status_mut() = StatusCode::OK;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx, when it is the edge, would otherwise hold the events back in its buffer.
    headers.insert(
        http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    answer
}
