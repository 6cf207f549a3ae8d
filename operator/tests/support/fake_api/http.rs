//! The HTTP side of the simulated API server: decodes kube's requests,
//! injects failures, records every request with its RBAC attributes, and
//! encodes the store's replies (whole JSON documents or a watch stream).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use serde_json::Value;

use drasi_store_operator::rbac::RequestAttributes;

use super::store::{Reply, status};
use super::{FakeApiServer, RecordedRequest};

/// Response body: whole JSON documents, or an endless watch stream.
pub type FakeBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// The query string's parameters, percent-decoded.
pub fn query_params(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl FakeApiServer {
    pub(super) async fn handle(&self, request: Request<Body>) -> Response<FakeBody> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            // Server-side apply bodies are JSON too (YAML is a superset).
            Some(serde_json::from_slice(&bytes).expect("request body is JSON"))
        };
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);

        let mut state = self.lock();
        let mut rbac: Vec<RequestAttributes> =
            RequestAttributes::from_request(&method, &path, &query)
                .into_iter()
                .collect();
        let failure = state
            .failures
            .iter_mut()
            .find(|f| f.method == method && f.path == path && f.remaining > 0);
        let result = if let Some(failure) = failure {
            failure.remaining -= 1;
            Err(failure.status)
        } else {
            state.store.respond(
                &method,
                &path,
                &query_params(&query),
                content_type.as_deref(),
                body.as_ref(),
            )
        };
        // A server-side apply that creates its object is authorised as
        // `create` as well.
        if let Ok((_, true)) = &result
            && let Some(mut create) = rbac.first().cloned()
        {
            create.verb = "create".into();
            rbac.push(create);
        }
        state.requests.push(RecordedRequest {
            method,
            path: path.clone(),
            query,
            content_type,
            body,
            rbac,
        });
        drop(state);
        match result {
            Ok((reply, _)) => encode(reply),
            Err(code) => encode(status(code, &format!("simulated failure on {path}"))),
        }
    }
}

impl FakeApiServer {
    /// Serves the simulated API server over plain HTTP on a free loopback
    /// port, so a separate process (the operator binary, with a kubeconfig
    /// naming `http://<addr>`) can be measured against it. Requests are
    /// answered, recorded and counted exactly as through [`Self::start`]'s
    /// client.
    pub async fn serve_http(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = self.clone();
        let router = axum::Router::new().fallback(move |request: Request<axum::body::Body>| {
            let server = server.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let request = Request::from_parts(parts, Body::from(bytes));
                server.handle(request).await.map(axum::body::Body::new)
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve HTTP");
        });
        addr
    }
}

fn encode(reply: Reply) -> Response<FakeBody> {
    let (code, body) = match reply {
        Reply::Json(code, value) => {
            let bytes = Bytes::from(serde_json::to_vec(&value).expect("JSON"));
            (code, Full::new(bytes).boxed_unsync())
        }
        Reply::Text(code, text) => {
            return Response::builder()
                .status(StatusCode::from_u16(code).expect("valid status"))
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from(text)).boxed_unsync())
                .expect("response");
        }
        Reply::Watch(events) => {
            let stream = futures::stream::unfold(events, |mut events| async move {
                let line = events.recv().await?;
                Some((Ok(Frame::data(line)), events))
            });
            (200, StreamBody::new(stream).boxed_unsync())
        }
    };
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("response")
}
