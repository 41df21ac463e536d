//! Real HTTP backends on loopback, a waypoint serving on port 0, and a real client.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use ambit_api::istio::{DestinationRuleSpec, VirtualServiceSpec};
use ambit_waypoint::{Config, Endpoint, Engine, Named, Service, ServicePort, TcpConnector};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// The namespace the tests' objects and the waypoint live in.
pub const NAMESPACE: &str = "shop";
/// The waypoint's name, which policies target (`kind: Gateway`).
pub const WAYPOINT: &str = "waypoint";
/// The service port clients address; endpoints listen on a port chosen per test.
pub const SERVICE_PORT: u16 = 80;

/// How a backend answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// 200 at once.
    Answer,
    /// 200 after this long.
    Slow(Duration),
    /// 503 for the first `fail` of every `every` requests, 200 for the rest.
    Flaky { fail: u64, every: u64 },
    /// 503 at once to the first of every two requests, 200 after this long to the
    /// second.
    FailThenSlow(Duration),
    /// A request asking to `Upgrade` gets 101, then its bytes echoed back; others 200.
    Echo,
}

/// A pod: a hyper server on a loopback address, answering with what it saw as JSON
/// (`backend`, `method`, `path`, `headers`, `body`) and `x-backend: <name>`.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    pub ip: IpAddr,
    seen: watch::Receiver<Seen>,
}

/// What a backend has seen so far.
#[derive(Debug, Clone, Default)]
struct Seen {
    requests: u64,
    /// Connections accepted.
    connections: u64,
    /// The `Host` (or `:authority`) of the latest request.
    last_host: String,
}

impl Backend {
    /// How many requests reached this backend.
    pub fn hits(&self) -> u64 {
        self.seen.borrow().requests
    }

    /// How many connections this backend accepted.
    pub fn connections(&self) -> u64 {
        self.seen.borrow().connections
    }

    /// The `Host` (or `:authority`) of the latest request.
    pub fn last_host(&self) -> String {
        self.seen.borrow().last_host.clone()
    }

    /// Waits (up to 5s) until `count` requests have reached this backend.
    pub async fn wait_for_hits(&self, count: u64) {
        let mut seen = self.seen.clone();
        let reached = tokio::time::timeout(
            Duration::from_secs(5),
            seen.wait_for(|s| s.requests >= count),
        )
        .await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "expected {count} requests at backend {}, saw {} after 5s",
            self.name,
            self.hits()
        );
    }
}

/// Starts one backend per `(ip, name, behaviour)`, all on the same port (as pods of
/// one service listen on its targetPort); returns the port and the backends.
pub async fn start_backends(pods: &[(&str, &'static str, Behaviour)]) -> (u16, Vec<Backend>) {
    let ips: Vec<IpAddr> = pods
        .iter()
        .map(|(ip, _, _)| ip.parse().expect("test IPs parse"))
        .collect();
    let (port, listeners) = bind_same_port(&ips).await;
    let backends = listeners
        .into_iter()
        .zip(ips)
        .zip(pods)
        .map(|((listener, ip), (_, name, behaviour))| {
            let (record, seen) = watch::channel(Seen::default());
            tokio::spawn(serve_backend(listener, name, *behaviour, Arc::new(record)));
            Backend { name, ip, seen }
        })
        .collect();
    (port, backends)
}

/// Binds every IP on one port: the first on port 0, the others on the port it got;
/// tries again with a new port when another test holds it on one of the IPs.
pub async fn bind_same_port(ips: &[IpAddr]) -> (u16, Vec<TcpListener>) {
    let mut last_error = None;
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0))
            .await
            .expect("binding a loopback address");
        let port = first.local_addr().expect("a bound address").port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(error) => {
                    last_error = Some(error);
                    break;
                }
            }
        }
        if listeners.len() == ips.len() {
            return (port, listeners);
        }
    }
    panic!("no port was free on all of {ips:?}: {last_error:?}");
}

async fn serve_backend(
    listener: TcpListener,
    name: &'static str,
    behaviour: Behaviour,
    seen: Arc<watch::Sender<Seen>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        seen.send_modify(|seen| seen.connections += 1);
        let seen = Arc::clone(&seen);
        let service = service_fn(move |request: Request<Incoming>| {
            let host = request
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    request
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let mut hit = 0;
            seen.send_modify(|seen| {
                hit = seen.requests;
                seen.requests += 1;
                seen.last_host = host;
            });
            async move { Ok::<_, Infallible>(answer(name, behaviour, hit, request).await) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    name: &'static str,
    behaviour: Behaviour,
    hit: u64,
    mut request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let (Behaviour::Echo, Some(protocol)) = (
        behaviour,
        request.headers().get(http::header::UPGRADE).cloned(),
    ) {
        let upgraded = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgraded.await else {
                return;
            };
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(http::header::UPGRADE, protocol);
        response.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        return response;
    }
    let status = match behaviour {
        Behaviour::Answer | Behaviour::Echo => StatusCode::OK,
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
        Behaviour::Flaky { fail, every } if hit % every < fail => StatusCode::SERVICE_UNAVAILABLE,
        Behaviour::Flaky { .. } => StatusCode::OK,
        Behaviour::FailThenSlow(_) if hit.is_multiple_of(2) => StatusCode::SERVICE_UNAVAILABLE,
        Behaviour::FailThenSlow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
    };
    let headers: BTreeMap<String, Vec<String>> = request
        .headers()
        .keys()
        .map(|name| {
            let values = request
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .collect();
            (name.as_str().to_owned(), values)
        })
        .collect();
    let received = request
        .body_mut()
        .collect()
        .await
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
        .unwrap_or_default();
    let body = json!({
        "backend": name,
        "body": received,
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    response
        .headers_mut()
        .insert("x-remove-me", HeaderValue::from_static("secret"));
    response
        .headers_mut()
        .insert("x-app-version", HeaderValue::from_static("1"));
    response
}

/// A service `name` in [`NAMESPACE`] on [`SERVICE_PORT`] → `target_port`, with one
/// endpoint per backend labelled `version: <backend name>`.
pub fn service(name: &str, target_port: u16, backends: &[Backend]) -> Service {
    Service {
        namespace: NAMESPACE.into(),
        name: name.into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: SERVICE_PORT,
            target_port,
            app_protocol: String::new(),
        }],
        endpoints: backends
            .iter()
            .map(|b| Endpoint {
                workload: format!("{name}-{}", b.name),
                ..Endpoint::new(b.ip, [("app", name), ("version", b.name)])
            })
            .collect(),
    }
}

/// A VirtualService in [`NAMESPACE`] from YAML.
pub fn virtual_service(name: &str, yaml: &str) -> Named<VirtualServiceSpec> {
    Named {
        namespace: NAMESPACE.into(),
        name: name.into(),
        spec: serde_yaml_ng::from_str(yaml).expect("the test's VirtualService is valid YAML"),
    }
}

/// A DestinationRule in [`NAMESPACE`] from YAML.
pub fn destination_rule(name: &str, yaml: &str) -> Named<DestinationRuleSpec> {
    Named {
        namespace: NAMESPACE.into(),
        name: name.into(),
        spec: serde_yaml_ng::from_str(yaml).expect("the test's DestinationRule is valid YAML"),
    }
}

/// Any Istio object in [`NAMESPACE`] from YAML (policies: `AuthorizationPolicySpec`,
/// `RequestAuthenticationSpec`).
pub fn named<T: serde::de::DeserializeOwned>(name: &str, yaml: &str) -> Named<T> {
    Named {
        namespace: NAMESPACE.into(),
        name: name.into(),
        spec: serde_yaml_ng::from_str(yaml)
            .unwrap_or_else(|e| panic!("the test's {name} is valid YAML: {e}")),
    }
}

/// Subsets `v1`, `v2`, `v3` of service `app` by the `version` label.
pub fn app_subsets() -> Named<DestinationRuleSpec> {
    destination_rule(
        "app",
        "
host: app
subsets:
- {name: v1, labels: {version: v1}}
- {name: v2, labels: {version: v2}}
- {name: v3, labels: {version: v3}}
",
    )
}

/// A config of these services and objects in [`NAMESPACE`].
pub fn config(
    services: Vec<Service>,
    virtual_services: Vec<Named<VirtualServiceSpec>>,
    destination_rules: Vec<Named<DestinationRuleSpec>>,
) -> Config {
    Config {
        namespace: NAMESPACE.into(),
        name: WAYPOINT.into(),
        services,
        virtual_services,
        destination_rules,
        ..Config::default()
    }
}

/// A waypoint serving on `127.0.0.1:0` until dropped.
#[derive(Debug)]
pub struct Waypoint {
    pub address: SocketAddr,
    pub engine: Arc<Engine>,
    registry: Registry,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ambit_waypoint::ProxyError>>>,
}

impl Waypoint {
    pub async fn start(config: &Config) -> Self {
        Self::start_with(config, |engine| engine).await
    }

    /// A waypoint that trusts `jwks_roots` for `https` key sets.
    pub async fn start_trusting(
        config: &Config,
        jwks_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        Self::start_with(config, |engine| engine.trusting_for_jwks(jwks_roots)).await
    }

    /// A waypoint whose engine `setup` finished building.
    pub async fn start_with(config: &Config, setup: impl FnOnce(Engine) -> Engine) -> Self {
        let mut registry = Registry::default();
        let engine = Arc::new(setup(
            Engine::new(config, Arc::new(TcpConnector), &mut registry)
                .unwrap_or_else(|e| panic!("the test config compiles: {e}")),
        ));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the waypoint");
        let address = listener.local_addr().expect("a bound address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ambit_waypoint::run(listener, Arc::clone(&engine), async {
            let _ = stopped.await;
        }));
        Self {
            address,
            engine,
            registry,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("the registry encodes");
        text
    }

    /// Stops accepting, waits for open connections, and returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), ambit_waypoint::ProxyError> {
        let _ = self.shutdown.take().expect("running").send(());
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the waypoint drains within 5s")
            .expect("the waypoint task does not panic")
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The backend's echo of the request, as JSON.
    pub fn echo(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a backend's JSON echo, got {} {:?}: {e}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Which backend answered (its `x-backend`), or `-` for the waypoint itself.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The values of response header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII header"))
            .collect()
    }
}

/// A real HTTP client pointed at a waypoint.
#[derive(Debug, Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    waypoint: SocketAddr,
}

impl TestClient {
    /// HTTP/1.1 to `waypoint`.
    pub fn http1(waypoint: &Waypoint) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            waypoint: waypoint.address,
        }
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(host, path, &[]).await
    }

    /// `GET path` with `Host: host` and extra headers.
    pub async fn send(&self, host: &str, path: &str, headers: &[(&'static str, &str)]) -> Reply {
        self.send_method(Method::GET, host, path, headers).await
    }

    /// `method path` with `Host: host` and extra headers.
    pub async fn send_method(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.waypoint))
            .body(Full::new(Bytes::new()))
            .expect("a valid test request");
        request.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_str(host).expect("a valid host"),
        );
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("a valid value"),
            );
        }
        self.request(request).await
    }

    /// Sends `request` (its URI's authority is replaced by the waypoint's).
    pub async fn request(&self, mut request: Request<Full<Bytes>>) -> Reply {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{}{path}", self.waypoint)
            .parse()
            .expect("a valid URI");
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("the waypoint answers: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("the whole response body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// `GET uri` over a new HTTP/2 (prior knowledge) connection to `waypoint`; the
/// URI's authority is the `:authority` the waypoint routes on.
pub async fn http2_get(waypoint: &Waypoint, uri: &str) -> Reply {
    let stream = TcpStream::connect(waypoint.address)
        .await
        .expect("connecting to the waypoint");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake with the waypoint");
    tokio::spawn(connection);
    let request = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("a valid test request");
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("the waypoint answers over HTTP/2: {e:?}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the whole response body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends `count` GETs for `host` (`concurrency` at a time) and counts answers per
/// backend (`-` for the waypoint's own) and per status.
pub async fn tally(
    client: &TestClient,
    host: &str,
    count: usize,
    concurrency: usize,
) -> (BTreeMap<String, usize>, BTreeMap<u16, usize>) {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let host = host.to_owned();
        let share = count / concurrency + usize::from(worker < count % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::with_capacity(share);
            for _ in 0..share {
                let reply = client.get(&host, "/").await;
                replies.push((reply.backend().to_owned(), reply.status.as_u16()));
            }
            replies
        }));
    }
    let mut backends = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for task in tasks {
        for (backend, status) in task.await.expect("a tally worker does not panic") {
            *backends.entry(backend).or_default() += 1;
            *statuses.entry(status).or_default() += 1;
        }
    }
    (backends, statuses)
}

/// An address nothing listens on: bound, then closed.
pub async fn closed_port(ip: &str) -> io::Result<u16> {
    let listener = TcpListener::bind((ip.parse::<IpAddr>().expect("a test IP"), 0)).await?;
    Ok(listener.local_addr()?.port())
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A waypoint for service `app` on one answering pod at `ip`, whose DestinationRule
/// sets `connection_pool`; with the pod and the service's port.
pub async fn app_with_pool(ip: &str, connection_pool: &str) -> (Waypoint, Vec<Backend>, u16) {
    let (port, backends) = start_backends(&[(ip, "v1", Behaviour::Answer)]).await;
    let rule = destination_rule(
        "app",
        &format!("{{host: app, trafficPolicy: {{connectionPool: {connection_pool}}}}}"),
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![rule],
    ))
    .await;
    (waypoint, backends, port)
}

/// Waits (up to 5s) until the waypoint has recorded `count` requests with `labels`:
/// a request is recorded when its response body is dropped, just after the client has
/// it.
pub async fn wait_for_requests(waypoint: &Waypoint, labels: &[(&str, &str)], count: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = waypoint.metrics();
        if sample(&text, "istio_requests_total", labels) >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} requests with {labels:?} within 5s; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
