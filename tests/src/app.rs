//! Driving `pod-app` (this crate's test program) in nodes and pods.

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{ChildGuard, Node, Pod, cmd::Finished, paths::pod_app};

/// How long `serve` may take to print `listening`, and `connect` to finish.
pub const APP_TIMEOUT: Duration = Duration::from_secs(10);

/// Somewhere a process can run: a [`Node`] or a [`Pod`].
pub trait Place {
    /// As [`Node::spawn`] / [`Pod::spawn`].
    ///
    /// # Errors
    /// When the process cannot start.
    fn spawn(&self, command: &mut Command) -> Result<ChildGuard>;

    /// As [`Node::exec`] / [`Pod::exec`].
    ///
    /// # Errors
    /// When the process cannot start or runs past `timeout`.
    fn exec(&self, command: &mut Command, timeout: Duration) -> Result<Finished> {
        self.spawn(command)?.finish(timeout)
    }
}

impl Place for Node {
    fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        Node::spawn(self, command)
    }
}

impl Place for Pod {
    fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        Pod::spawn(self, command)
    }
}

/// Starts `pod-app serve --listen LISTEN` at `place` and waits until it listens.
///
/// # Errors
/// When it cannot start or does not print `listening` in time.
pub fn serve(place: &impl Place, listen: SocketAddr) -> Result<ChildGuard> {
    let server =
        place.spawn(Command::new(pod_app()).args(["serve", "--listen", &listen.to_string()]))?;
    server.wait_for_log("listening", APP_TIMEOUT)?;
    Ok(server)
}

/// Starts `pod-app sink --listen LISTEN` at `place` (reads each connection to its end
/// and answers with the byte count) and waits until it listens.
///
/// # Errors
/// When it cannot start or does not print `listening` in time.
pub fn sink(place: &impl Place, listen: SocketAddr) -> Result<ChildGuard> {
    let sink =
        place.spawn(Command::new(pod_app()).args(["sink", "--listen", &listen.to_string()]))?;
    sink.wait_for_log("listening", APP_TIMEOUT)?;
    Ok(sink)
}

/// Starts `pod-app bulk-send` at `place` towards a [`sink`] at `to`, in the background;
/// [`ChildGuard::finish`] then gives its JSON report (`"ok":true` when the sink counted
/// every byte).
///
/// # Errors
/// When it cannot start.
pub fn bulk_send(
    place: &impl Place,
    to: SocketAddr,
    bytes: u64,
    write_size: usize,
) -> Result<ChildGuard> {
    place.spawn(Command::new(pod_app()).args([
        "bulk-send",
        "--to",
        &to.to_string(),
        "--bytes",
        &bytes.to_string(),
        "--write-size",
        &write_size.to_string(),
        "--timeout-ms",
        "60000",
    ]))
}

/// Starts `pod-app hold` at `place` against a [`serve`] at `to`: one connection kept
/// busy for `hold`, in the background; waits until its first echo came back.
/// [`ChildGuard::finish`] then gives its JSON report (`"ok":false` when the connection
/// broke first).
///
/// # Errors
/// When it cannot start, or its connection does not work in time.
pub fn hold(place: &impl Place, to: SocketAddr, hold: Duration) -> Result<ChildGuard> {
    let holder = place.spawn(Command::new(pod_app()).args([
        "hold",
        "--to",
        &to.to_string(),
        "--hold-ms",
        &hold.as_millis().to_string(),
    ]))?;
    holder.wait_for_log("held", APP_TIMEOUT)?;
    Ok(holder)
}

/// Starts `pod-app http --listen LISTEN --name NAME` at `place` (answers every request
/// with `NAME`) and waits until it listens.
///
/// # Errors
/// When it cannot start or does not listen in time.
pub fn http_serve(place: &impl Place, listen: SocketAddr, name: &str) -> Result<ChildGuard> {
    http_serve_status(place, listen, name, 200)
}

/// [`http_serve`] answering plain requests with `status` (a broken pod: 503).
///
/// # Errors
/// As [`http_serve`].
pub fn http_serve_status(
    place: &impl Place,
    listen: SocketAddr,
    name: &str,
    status: u16,
) -> Result<ChildGuard> {
    let server = place.spawn(Command::new(pod_app()).args([
        "http",
        "--listen",
        &listen.to_string(),
        "--name",
        name,
        "--status",
        &status.to_string(),
    ]))?;
    server.wait_for_log("listening", APP_TIMEOUT)?;
    Ok(server)
}

/// What `pod-app http-get` counted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpReport {
    pub ok: bool,
    #[serde(default)]
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// Answers by body (the serving pod's name).
    #[serde(default)]
    pub bodies: std::collections::BTreeMap<String, u64>,
    pub error: Option<String>,
    /// The quickest and slowest answer, in milliseconds.
    #[serde(default)]
    pub fastest_ms: Option<u64>,
    #[serde(default)]
    pub slowest_ms: Option<u64>,
}

/// Requests `pod-app http-get` sends: `count` times `method path`, with `header`.
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub header: Option<&'a str>,
    pub count: usize,
}

impl Default for HttpCall<'_> {
    fn default() -> Self {
        Self {
            method: "GET",
            path: "/",
            header: None,
            count: 1,
        }
    }
}

/// Runs `pod-app http-get` at `place` with `call` towards `to`.
///
/// # Errors
/// When it cannot run or prints no report.
pub fn http_call(place: &impl Place, to: SocketAddr, call: HttpCall<'_>) -> Result<HttpReport> {
    let mut command = Command::new(pod_app());
    command.args(["http-get", "--to", &to.to_string()]);
    command.args(["--count", &call.count.to_string(), "--method", call.method]);
    command.args(["--path", call.path]);
    if let Some(header) = call.header {
        command.args(["--header", header]);
    }
    let done = place.exec(&mut command, APP_TIMEOUT * 6)?;
    let line = done.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("expected one JSON report line from {done}"))
}

/// What `pod-app upgrade` saw.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpgradeReport {
    pub ok: bool,
    pub status: Option<String>,
    pub echo: Option<String>,
    pub error: Option<String>,
}

/// Runs `pod-app upgrade` at `place`: a WebSocket handshake to `to` for `host`, then
/// `text` sent over the switched connection and its echo read.
///
/// # Errors
/// When it cannot run or prints no report.
pub fn upgrade(
    place: &impl Place,
    to: SocketAddr,
    host: &str,
    text: &str,
) -> Result<UpgradeReport> {
    let mut command = Command::new(pod_app());
    command.args([
        "upgrade",
        "--to",
        &to.to_string(),
        "--host",
        host,
        "--send",
        text,
    ]);
    let done = place.exec(&mut command, APP_TIMEOUT)?;
    let line = done.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("expected one JSON report line from {done}"))
}

/// Runs `pod-app http-get` at `place`: `count` GETs of `/` to `to` on one connection,
/// with `header` (`name: value`) when given.
///
/// # Errors
/// When it cannot run or prints no report.
pub fn http_get(
    place: &impl Place,
    to: SocketAddr,
    count: usize,
    header: Option<&str>,
) -> Result<HttpReport> {
    http_request(place, "GET", to, count, header)
}

/// [`http_get`] with another method (the requests carry no body).
///
/// # Errors
/// As [`http_get`].
pub fn http_request(
    place: &impl Place,
    method: &str,
    to: SocketAddr,
    count: usize,
    header: Option<&str>,
) -> Result<HttpReport> {
    let call = HttpCall {
        method,
        header,
        count,
        ..HttpCall::default()
    };
    http_call(place, to, call)
}

/// Both ends' view of a connection, as the server reports it in its greeting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerSaw {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// What `pod-app connect` printed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectReport {
    pub ok: bool,
    /// The client socket's peer (`getpeername`).
    pub peer: Option<SocketAddr>,
    /// The client socket's own address (`getsockname`).
    pub local: Option<SocketAddr>,
    pub server_saw: Option<ServerSaw>,
    pub echo: Option<String>,
    /// What failed, when `ok` is false: `connect: … (ConnectionRefused)`.
    pub error: Option<String>,
    /// The `io::ErrorKind` of the failure, for example `ConnectionRefused`.
    pub error_kind: Option<String>,
}

impl ConnectReport {
    /// `self` if the exchange succeeded, else an error quoting the failure.
    ///
    /// # Errors
    /// When `ok` is false.
    pub fn expect_ok(self) -> Result<Self> {
        if !self.ok {
            bail!("expected the connection to succeed, but it failed: {self:?}");
        }
        Ok(self)
    }
}

/// Runs `pod-app connect --to TO` at `place` and returns its report (also when the
/// connection failed: check `ok`).
///
/// # Errors
/// When it cannot run or prints no report.
pub fn connect(place: &impl Place, to: SocketAddr) -> Result<ConnectReport> {
    connect_with(place, to, "hello", APP_TIMEOUT)
}

/// [`connect`] sending `text`, with a connect/read timeout of `timeout`.
///
/// # Errors
/// As [`connect`].
pub fn connect_with(
    place: &impl Place,
    to: SocketAddr,
    text: &str,
    timeout: Duration,
) -> Result<ConnectReport> {
    let timeout_ms = timeout.as_millis().to_string();
    let done = place.exec(
        Command::new(pod_app()).args([
            "connect",
            "--to",
            &to.to_string(),
            "--send",
            text,
            "--timeout-ms",
            &timeout_ms,
        ]),
        timeout + APP_TIMEOUT,
    )?;
    let line = done.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("expected one JSON report line from {done}"))
}

/// Starts `pod-app ping-pong` at `place` against a [`serve`] at `to`: `count` round
/// trips of `size` bytes on one connection, each sent when the last came back (a
/// closed loop), in the background; [`ChildGuard::finish`] then gives its JSON report
/// (`p50_us`, `p99_us`, …).
///
/// # Errors
/// When it cannot start.
pub fn ping_pong(
    place: &impl Place,
    to: SocketAddr,
    count: u32,
    size: usize,
) -> Result<ChildGuard> {
    place.spawn(Command::new(pod_app()).args([
        "ping-pong",
        "--to",
        &to.to_string(),
        "--count",
        &count.to_string(),
        "--size",
        &size.to_string(),
    ]))
}

/// An open-loop load for [`rate`]: `per_sec` requests of `size` bytes a second for
/// `duration`, dealt over `connections` connections.
#[derive(Debug, Clone, Copy)]
pub struct RateLoad {
    pub per_sec: u32,
    pub duration: Duration,
    pub size: usize,
    pub connections: u32,
}

/// Starts `pod-app rate` at `place` against a [`serve`] at `to`, in the background;
/// [`ChildGuard::finish`] then gives its JSON report (latency percentiles from when
/// each request was due, the achieved rate, `errors`).
///
/// # Errors
/// When it cannot start.
pub fn rate(place: &impl Place, to: SocketAddr, load: &RateLoad) -> Result<ChildGuard> {
    let pace = (load.per_sec, load.duration, load.connections);
    spawn_rate(place, to, pace, ["--size", &load.size.to_string()])
}

/// `pod-app rate` towards `to` at `(per second, for how long, over how many
/// connections)`, with the `what` it sends (`--size N` or `--http PATHS`).
fn spawn_rate(
    place: &impl Place,
    to: SocketAddr,
    (per_sec, duration, connections): (u32, Duration, u32),
    what: [&str; 2],
) -> Result<ChildGuard> {
    place.spawn(
        Command::new(pod_app())
            .args([
                "rate",
                "--to",
                &to.to_string(),
                "--rate",
                &per_sec.to_string(),
            ])
            .args(["--duration-ms", &duration.as_millis().to_string()])
            .args(["--connections", &connections.to_string()])
            .args(what),
    )
}

/// An open-loop HTTP/1.1 load for [`http_rate`]: `per_sec` `GET`s a second for
/// `duration`, of `paths` in turn, pipelined over `connections` keep-alive connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpRateLoad<'a> {
    pub per_sec: u32,
    pub duration: Duration,
    pub connections: u32,
    pub paths: &'a [&'a str],
}

/// Starts `pod-app rate --http` at `place` against an HTTP server at `to`, in the
/// background; [`ChildGuard::finish`] then gives its JSON report (as [`rate`]'s, with
/// answers counted by `statuses` and `bodies`; non-2xx answers are `errors`).
///
/// # Errors
/// When it cannot start.
pub fn http_rate(
    place: &impl Place,
    to: SocketAddr,
    load: &HttpRateLoad<'_>,
) -> Result<ChildGuard> {
    let pace = (load.per_sec, load.duration, load.connections);
    spawn_rate(place, to, pace, ["--http", &load.paths.join(",")])
}
