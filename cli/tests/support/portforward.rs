//! A simulated API server endpoint that also serves `pods/portforward`,
//! so the CLI's tunnel runs exactly as against a cluster: kube opens a
//! WebSocket (`v4.channel.k8s.io`) to `.../pods/<pod>/portforward?ports=P`
//! and this side bridges channel 0 to a real server's TCP port. Every
//! other request is passed on to the simulated API server over HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use futures::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::FakeApiServer;

/// What the endpoint saw: each port-forward as `<pod path> port <port>`.
#[derive(Clone, Default)]
pub struct Forwards(Arc<Mutex<Vec<String>>>);

impl Forwards {
    pub fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Serves the simulated API server at a loopback URL, forwarding every
/// pod port-forward to `target`. Returns a kube client for it.
pub async fn serve(fake: &FakeApiServer, target: SocketAddr) -> (kube::Client, Forwards) {
    let api = fake.serve_http().await;
    let forwards = Forwards::default();
    let seen = forwards.clone();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: Request<Body>| {
        let seen = seen.clone();
        let http = http.clone();
        async move {
            if request.uri().path().ends_with("/portforward") {
                let (response, port) = upgrade(request_path(&request), request, target);
                seen.0.lock().unwrap().push(port);
                return response;
            }
            proxy(&http, api, request).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), forwards)
}

async fn proxy(http: &reqwest::Client, api: SocketAddr, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let url = format!("http://{api}{}", parts.uri);
    let mut outgoing = http.request(parts.method.clone(), url).body(body);
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        outgoing = outgoing.header(http::header::CONTENT_TYPE, ct);
    }
    let answer = outgoing.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    if let Some(ct) = answer.headers().get(http::header::CONTENT_TYPE) {
        response = response.header(http::header::CONTENT_TYPE, ct);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

fn request_path(request: &Request<Body>) -> String {
    request.uri().path().to_string()
}

/// Accepts the WebSocket upgrade as the API server does and bridges the
/// port's data channel to `target`. Returns the response and
/// `<path> port <port>` for the record.
fn upgrade(
    path: String,
    mut request: Request<Body>,
    target: SocketAddr,
) -> (Response<Body>, String) {
    let query = request.uri().query().unwrap_or_default().to_string();
    let port: u16 = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "ports")
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("one port in {query:?}"));
    let key = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .expect("a WebSocket key")
        .as_bytes()
        .to_vec();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.expect("upgrade");
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        bridge(ws, port, target).await;
    });
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(&key))
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, "v4.channel.k8s.io")
        .body(Body::empty())
        .unwrap();
    (response, format!("{path} port {port}"))
}

async fn bridge<S>(ws: WebSocketStream<S>, port: u16, target: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    // Each channel (0 data, 1 error) first announces its port.
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if sink
            .send(Message::binary(vec![channel, lo, hi]))
            .await
            .is_err()
        {
            return;
        }
    }
    let tcp = tokio::net::TcpStream::connect(target)
        .await
        .expect("target listens");
    let (mut from_server, mut to_server) = tcp.into_split();
    let upstream = async {
        while let Some(Ok(message)) = stream.next().await {
            let written = match message {
                Message::Binary(bytes) if bytes.first() == Some(&0) => {
                    to_server.write_all(&bytes[1..]).await
                }
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::join!(upstream, downstream);
}
