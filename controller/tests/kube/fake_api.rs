//! A fake Kubernetes API server on loopback, answering what kube-rs's watcher asks: a
//! list (with a `resourceVersion`; core items without their type, as the API server
//! sends them), then a watch that streams the events the test sends. Resources it does
//! not serve answer 404, as for a CRD that is not installed. A POST (an Event, a
//! TokenReview) is recorded and answered as the test says. A PATCH (a server-side apply)
//! is recorded with its query and content type, and answered 200 with its body unless
//! the test says otherwise.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};

/// A recorded response or object, from `tests/kube/`.
pub fn recorded(name: &str) -> Value {
    let path = format!("{}/tests/kube/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How long a test waits for the writes it expects.
const WRITES_WITHIN: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;
type WatchStream = mpsc::UnboundedSender<Bytes>;
/// What a write to one path answers, given its body.
type Answer = Arc<dyn Fn(&Value) -> (StatusCode, Value) + Send + Sync>;
/// Every write received, in order.
type Writes = watch::Sender<Vec<Write>>;

/// One POST or PATCH the server received.
#[derive(Debug, Clone)]
pub struct Write {
    pub method: Method,
    pub path: String,
    /// The query string, as sent (`fieldManager=…&force=true`).
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

/// One served resource (`/api/v1/pods`): its objects, and the watch open on it.
struct Resource {
    /// By `namespace/name`.
    items: BTreeMap<String, Value>,
    watch: watch::Sender<Option<WatchStream>>,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    /// The cluster's `resourceVersion`, bumped by every change.
    version: u64,
    /// By method and path; a POST elsewhere answers 404, a PATCH 200 with its body.
    answers: BTreeMap<(String, String), Answer>,
}

/// The fake API server; it stops with the test's runtime.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    writes: Arc<Writes>,
}

impl FakeApi {
    /// Serves the resources at `paths` (`/apis/<group>/<version>/<plural>`), empty.
    pub async fn start(paths: impl IntoIterator<Item = String>) -> Self {
        let state = State {
            resources: paths
                .into_iter()
                .map(|path| {
                    let resource = Resource {
                        items: BTreeMap::new(),
                        watch: watch::channel(None).0,
                    };
                    (path, resource)
                })
                .collect(),
            version: 1000,
            answers: BTreeMap::new(),
        };
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let writes = Arc::new(watch::channel(Vec::new()).0);
        let (served, recorded_writes) = (Arc::clone(&state), Arc::clone(&writes));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, writes) = (Arc::clone(&served), Arc::clone(&recorded_writes));
                let service = service_fn(move |request| {
                    let (state, writes) = (Arc::clone(&state), Arc::clone(&writes));
                    async move { Ok::<_, Infallible>(answer(&state, &writes, request).await) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self {
            addr,
            state,
            writes,
        }
    }

    /// Answers each POST to `path` with what `answer` makes of its body.
    pub fn answer_posts(
        &self,
        path: &str,
        answer: impl Fn(&Value) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        self.answer(Method::POST, path, answer);
    }

    /// Answers each PATCH of `path` with what `answer` makes of its body, instead of 200
    /// and the body.
    pub fn answer_patches(
        &self,
        path: &str,
        answer: impl Fn(&Value) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        self.answer(Method::PATCH, path, answer);
    }

    fn answer(
        &self,
        method: Method,
        path: &str,
        answer: impl Fn(&Value) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        self.lock()
            .answers
            .insert((method.to_string(), path.to_owned()), Arc::new(answer));
    }

    /// The bodies of the POSTs to `path` so far, once there are at least `count`.
    pub async fn posts_to(&self, path: &str, count: usize) -> Vec<Value> {
        let posts = self
            .writes_where(&format!("POSTs to {path}"), count, |write| {
                write.method == Method::POST && write.path == path
            })
            .await;
        posts.into_iter().map(|post| post.body).collect()
    }

    /// The PATCHes so far, once there are at least `count`.
    pub async fn patches(&self, count: usize) -> Vec<Write> {
        self.writes_where("PATCHes", count, |write| write.method == Method::PATCH)
            .await
    }

    /// The writes that are `what` so far, once there are at least `count`.
    async fn writes_where(
        &self,
        what: &str,
        count: usize,
        selected: impl Fn(&Write) -> bool,
    ) -> Vec<Write> {
        let matching = |writes: &[Write]| -> Vec<Write> {
            writes
                .iter()
                .filter(|write| selected(write))
                .cloned()
                .collect()
        };
        let mut writes = self.writes.subscribe();
        let waited = tokio::time::timeout(
            WRITES_WITHIN,
            writes.wait_for(|writes| matching(writes).len() >= count),
        )
        .await;
        let written = matching(&self.writes.borrow());
        assert!(
            waited.is_ok(),
            "after {WRITES_WITHIN:?}, {} {what}, expected {count}: {written:#?}",
            written.len()
        );
        written
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("a URL");
        kube::Client::try_from(kube::Config::new(url)).expect("a client")
    }

    /// Every object the server holds now, in every resource.
    pub fn objects(&self) -> Vec<Value> {
        let state = self.lock();
        state
            .resources
            .values()
            .flat_map(|resource| resource.items.values().cloned())
            .collect()
    }

    /// Stores `object` in `path` without telling any watch: a change made while the
    /// watch was away. Returns the object as stored, with its new `resourceVersion`.
    pub fn put_quietly(&self, path: &str, mut object: Value) -> Value {
        let mut state = self.lock();
        state.version += 1;
        object["metadata"]["resourceVersion"] = state.version.to_string().into();
        resource(&mut state, path)
            .items
            .insert(key(&object), object.clone());
        object
    }

    /// Removes `object` from `path` without telling any watch.
    pub fn delete_quietly(&self, path: &str, object: &Value) -> Value {
        let mut state = self.lock();
        state.version += 1;
        let mut deleted = resource(&mut state, path)
            .items
            .remove(&key(object))
            .unwrap_or_else(|| panic!("{path} holds no {}", key(object)));
        deleted["metadata"]["resourceVersion"] = state.version.to_string().into();
        deleted
    }

    /// Applies `ADDED`, `MODIFIED` or `DELETED` of `object` to `path`, and sends the
    /// event on its watch once one is open. Returns the object as sent.
    pub async fn event(&self, path: &str, kind: &str, object: Value) -> Value {
        let object = if kind == "DELETED" {
            self.delete_quietly(path, &object)
        } else {
            self.put_quietly(path, object)
        };
        self.send(path, &serde_json::json!({"type": kind, "object": &object}))
            .await;
        object
    }

    /// Ends the watch on `path` with a `410 Gone` error, as the API server does when the
    /// watch's `resourceVersion` is too old: the watcher must list again.
    pub async fn expire_watch(&self, path: &str) {
        self.send(path, &recorded("watch-410-gone.json")).await;
        resource(&mut self.lock(), path).watch.send_replace(None);
    }

    /// Sends `event` on the watch open on `path`, waiting for one to open.
    async fn send(&self, path: &str, event: &Value) {
        let mut open = resource(&mut self.lock(), path).watch.subscribe();
        let stream = open
            .wait_for(|watch| watch.as_ref().is_some_and(|s| !s.is_closed()))
            .await
            .expect("the server holds the watch")
            .clone()
            .expect("an open watch");
        let mut line = serde_json::to_vec(event).expect("an event");
        line.push(b'\n');
        stream.send(line.into()).expect("the watch is open");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the fake API's state")
    }
}

fn resource<'a>(state: &'a mut State, path: &str) -> &'a mut Resource {
    state
        .resources
        .get_mut(path)
        .unwrap_or_else(|| panic!("the fake API does not serve {path}"))
}

/// `namespace/name` of an object.
fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or_default();
    format!("{namespace}/{}", meta["name"].as_str().expect("a name"))
}

/// A write's answer, or a list, a watch, or 404.
async fn answer(
    state: &Mutex<State>,
    writes: &Writes,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let method = request.method().clone();
    if method != Method::POST && method != Method::PATCH {
        return read(state, &request);
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .expect("a whole request body");
    let body: Value = serde_json::from_slice(&body.to_bytes()).expect("a JSON body");
    let answer = state
        .lock()
        .expect("the fake API's state")
        .answers
        .get(&(method.to_string(), path.clone()))
        .cloned();
    writes.send_modify(|writes| {
        writes.push(Write {
            method: method.clone(),
            path,
            query,
            content_type,
            body: body.clone(),
        });
    });
    match answer {
        Some(answer) => {
            let (status, value) = answer(&body);
            json(status, &value)
        }
        None if method == Method::PATCH => json(StatusCode::OK, &body),
        None => json(StatusCode::NOT_FOUND, &recorded("not-found.json")),
    }
}

/// A list, a watch, or 404.
fn read(state: &Mutex<State>, request: &Request<hyper::body::Incoming>) -> Response<Body> {
    let mut state = state.lock().expect("the fake API's state");
    let version = state.version.to_string();
    let path = request.uri().path();
    let Some(resource) = state.resources.get_mut(path) else {
        return json(StatusCode::NOT_FOUND, &recorded("not-found.json"));
    };
    let watching = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
    if watching {
        let (stream, events) = mpsc::unbounded_channel();
        resource.watch.send_replace(Some(stream));
        let body =
            StreamBody::new(UnboundedReceiverStream::new(events).map(|line| Ok(Frame::data(line))));
        return with_json_type(Response::new(body.boxed()));
    }
    let core = path.starts_with("/api/");
    let items: Vec<Value> = resource
        .items
        .values()
        .cloned()
        .map(|mut item| {
            // The API server leaves out the type of a built-in list's items.
            if core && let Some(fields) = item.as_object_mut() {
                fields.remove("kind");
                fields.remove("apiVersion");
            }
            item
        })
        .collect();
    let list = serde_json::json!({
        "kind": "List",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": version},
        "items": items,
    });
    json(StatusCode::OK, &list)
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(serde_json::to_vec(value).expect("JSON")));
    let mut response = Response::new(body.boxed());
    *response.status_mut() = status;
    with_json_type(response)
}

fn with_json_type(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header"),
    );
    response
}
