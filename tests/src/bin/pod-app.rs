//! `pod-app`: the TCP program the end-to-end tests run inside pods.
//!
//! ```text
//! pod-app serve     --listen ADDR                       greeting line, then echo
//! pod-app connect   --to ADDR [--send TEXT] [--timeout-ms N]
//! pod-app sink      --listen ADDR                       read to EOF, reply the count
//! pod-app bulk-send --to ADDR --bytes N --write-size N [--timeout-ms N]
//! pod-app ping-pong --to ADDR --count N --size N [--timeout-ms N]   (against serve)
//! pod-app hold      --to ADDR --hold-ms N [--timeout-ms N]             (against serve)
//! pod-app http      --listen ADDR --name NAME [--status N]   HTTP/1.1: answers NAME
//! pod-app http-get  --to ADDR --count N [--method M] [--path P] [--host H] [--header K:V]
//!                   [--timeout-ms N]
//! pod-app upgrade   --to ADDR [--host H] [--protocol P] [--send TEXT] [--timeout-ms N]
//! pod-app rate      --to ADDR --rate N --duration-ms N --size N [--connections N]
//!                   [--timeout-ms N]                                   (against serve)
//! pod-app rate      --to ADDR --rate N --duration-ms N --http PATH[,PATH…] [--host H]
//!                   [--connections N] [--timeout-ms N]          (against an HTTP server)
//! ```
//!
//! `http` answers every request `--status` (200) with its `--name` as the body
//! (keep-alive); `/status/N`, `/delay/MS` and `/flaky/F/E` (503 for F of every E) make it
//! misbehave, and an `Upgrade` request is switched and echoed; a client speaking HTTP/2
//! with prior knowledge (h2c) gets every request answered 200 with the name. `http-get` sends
//! `--count` requests on one keep-alive connection and reports how many answers had
//! each status and each body, and the fastest and slowest: `{"ok":true,
//! "statuses":{"200":N},"bodies":{"v2":N},"fastest_ms":…,"slowest_ms":…}`. `upgrade`
//! asks to switch to `--protocol` (websocket), then reports the echo of `--send`.
//!
//! `hold` keeps one connection busy (a small echo every 50 ms) for `--hold-ms`, printing
//! `held` once the first echo is back; it fails as soon as the connection breaks.
//!
//! `rate` is an open-loop load: `--rate` requests a second for `--duration-ms`, dealt
//! round-robin over `--connections` (default 1) and pipelined on each, so a request is
//! sent when it is due whatever is still in flight. Latency is measured from when a
//! request was *due*, not when it went out: a late send or a queue in the path shows in
//! the figures instead of slowing the load (no coordinated omission). Its report holds
//! p50/p99/p999/max, the achieved rate, how late the sender was (`send_lag_p99_us`: the
//! client's own share) and `errors` (requests never answered, or not by the time as
//! long as the run again has passed; `first_error` says why).
//! With `--http` the requests are HTTP/1.1 `GET`s of the paths in turn, pipelined the
//! same way; answers that are not 2xx count as errors too, and the report counts
//! answers by status and by body.
//!
//! Servers print `listening ADDR` once bound. `serve` greets every connection with
//! one JSON line `{"peer":…,"local":…}` (what its socket sees) and then echoes until
//! EOF, with `TCP_NODELAY`. Clients print one JSON line — `{"ok":true,…}`, or `{"ok":false,"error":…,
//! "error_kind":…}` and exit 1. IPv4-mapped IPv6 addresses are printed as IPv4.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    env,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const USAGE: &str = "usage: pod-app serve --listen ADDR | connect --to ADDR [--send TEXT] [--timeout-ms N] \
| sink --listen ADDR | bulk-send --to ADDR --bytes N --write-size N [--timeout-ms N] \
| ping-pong --to ADDR --count N --size N [--timeout-ms N] \
| hold --to ADDR --hold-ms N [--timeout-ms N] | http --listen ADDR --name NAME [--status N] \
| http-get --to ADDR --count N [--method M] [--path P] [--host H] [--header K:V] [--timeout-ms N] \
| upgrade --to ADDR [--host H] [--protocol P] [--send TEXT] [--timeout-ms N] \
| rate --to ADDR --rate N --duration-ms N (--size N | --http PATH[,PATH…] [--host H]) \
[--connections N] [--timeout-ms N]";
const DEFAULT_TIMEOUT_MS: u64 = 5000;
const BUFFER_BYTES: usize = 256 * 1024;

/// A step that failed, and how.
struct Failure {
    step: String,
    error: io::Error,
}

fn at(step: &str) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |error| Failure {
        step: step.to_owned(),
        error,
    }
}

#[path = "pod-app/h2c.rs"]
mod h2c;
#[path = "pod-app/http.rs"]
mod http;
#[path = "pod-app/rate.rs"]
mod rate;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        return usage("no mode given");
    };
    let options = match parse_options(rest) {
        Ok(options) => options,
        Err(why) => return usage(&why),
    };
    let result = match mode.as_str() {
        "serve" => options
            .addr("listen")
            .map(|addr| serve(addr, greet_and_echo)),
        "sink" => options.addr("listen").map(|addr| serve(addr, count_to_eof)),
        "connect" => options
            .client(|to, timeout| connect(to, options.get("send").unwrap_or("hello"), timeout)),
        "bulk-send" => options
            .number("bytes")
            .and_then(|bytes| Ok((bytes, options.number("write-size")?)))
            .and_then(|(bytes, size)| {
                options.client(|to, timeout| bulk_send(to, bytes, size, timeout))
            }),
        "ping-pong" => options
            .number("count")
            .and_then(|count| Ok((count, options.number("size")?)))
            .and_then(|(count, size)| {
                options.client(|to, timeout| ping_pong(to, count, size, timeout))
            }),
        "hold" => options.number("hold-ms").and_then(|hold_ms| {
            options.client(|to, timeout| hold(to, Duration::from_millis(hold_ms as u64), timeout))
        }),
        "http" => options.addr("listen").and_then(|addr| {
            let server = http::Server {
                name: options.get("name").ok_or("--name is required")?.to_owned(),
                status: match options.get("status") {
                    Some(_) => u16::try_from(options.number("status")?)
                        .map_err(|_| "--status: not an HTTP status".to_owned())?,
                    None => 200,
                },
            };
            Ok(http::serve(addr, server))
        }),
        "upgrade" => options.client(|to, timeout| {
            let host = options.get("host").unwrap_or("app");
            let protocol = options.get("protocol").unwrap_or("websocket");
            http::upgrade(
                to,
                host,
                protocol,
                options.get("send").unwrap_or("hello"),
                timeout,
            )
        }),
        "http-get" => options.number("count").and_then(|count| {
            let request = http::Request {
                method: options.get("method").unwrap_or("GET").to_owned(),
                path: options.get("path").unwrap_or("/").to_owned(),
                host: options.get("host").map(str::to_owned),
                header: options.get("header").map(str::to_owned),
            };
            options.client(|to, timeout| http::get(to, count, &request, timeout))
        }),
        "rate" => rate::RateOptions::parse(&options)
            .and_then(|load| options.client(|to, timeout| rate::rate(to, &load, timeout))),
        other => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Err(why) => usage(&why),
        Ok(Err(failure)) => {
            let kind = format!("{:?}", failure.error.kind());
            print_line(&json!({
                "ok": false,
                "error": format!("{}: {} ({kind})", failure.step, failure.error),
                "error_kind": kind,
            }));
            ExitCode::FAILURE
        }
        Ok(Ok(report)) => {
            print_line(&report);
            ExitCode::SUCCESS
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("pod-app: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn print_line(value: &Value) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

struct Options(HashMap<String, String>);

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = HashMap::new();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --OPTION, got {flag:?}"))?;
        let value = args
            .next()
            .ok_or_else(|| format!("--{name} needs a value"))?;
        options.insert(name.to_owned(), value.clone());
    }
    Ok(Options(options))
}

impl Options {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn addr(&self, name: &str) -> Result<SocketAddr, String> {
        let text = self
            .get(name)
            .ok_or_else(|| format!("--{name} ADDR is required"))?;
        text.parse().map_err(|e| format!("--{name} {text:?}: {e}"))
    }

    fn number(&self, name: &str) -> Result<usize, String> {
        let text = self
            .get(name)
            .ok_or_else(|| format!("--{name} N is required"))?;
        text.parse().map_err(|e| format!("--{name} {text:?}: {e}"))
    }

    /// Runs a client with `--to` and `--timeout-ms`.
    fn client(
        &self,
        run: impl FnOnce(SocketAddr, Duration) -> Result<Value, Failure>,
    ) -> Result<Result<Value, Failure>, String> {
        let to = self.addr("to")?;
        let timeout_ms = match self.get("timeout-ms") {
            Some(text) => text
                .parse()
                .map_err(|e| format!("--timeout-ms {text:?}: {e}"))?,
            None => DEFAULT_TIMEOUT_MS,
        };
        Ok(run(to, Duration::from_millis(timeout_ms.max(1))))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Binds, announces, and serves each connection on its own thread. Only returns on a
/// bind failure.
fn serve(addr: SocketAddr, handle: fn(TcpStream) -> io::Result<()>) -> Result<Value, Failure> {
    let listener = TcpListener::bind(addr).map_err(at("bind"))?;
    let local = listener.local_addr().map_err(at("getsockname"))?;
    println!("listening {}", canonical(local));
    io::stdout().flush().map_err(at("print"))?;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(error) = handle(stream) {
                        eprintln!("pod-app: connection: {error}");
                    }
                });
            }
            Err(error) => eprintln!("pod-app: accept: {error}"),
        }
    }
    unreachable!("incoming() never ends")
}

fn greet_and_echo(mut stream: TcpStream) -> io::Result<()> {
    // As an RPC server would: with Nagle on, an echo is held back while the previous
    // one is unacknowledged, which with pipelined requests (`rate`) means until the
    // next request carries the ACK — a whole request interval.
    stream.set_nodelay(true)?;
    let greeting = json!({
        "peer": canonical(stream.peer_addr()?).to_string(),
        "local": canonical(stream.local_addr()?).to_string(),
    });
    stream.write_all(format!("{greeting}\n").as_bytes())?;
    let mut buffer = vec![0; BUFFER_BYTES];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buffer[..n])?;
    }
}

fn count_to_eof(mut stream: TcpStream) -> io::Result<()> {
    let mut buffer = vec![0; BUFFER_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    // Also on stdout, so a test can check what arrived without trusting the client.
    println!("{}", json!({ "received": total }));
    stream.write_all(format!("{total}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)
}

/// Connects with `timeout` for the connect and for every later read and write.
fn dial(to: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    let stream =
        TcpStream::connect_timeout(&to, timeout).map_err(at(&format!("connect to {to}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(at("set read timeout"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(at("set write timeout"))?;
    Ok(stream)
}

/// Reads `serve`'s greeting line.
fn read_greeting(reader: &mut impl BufRead) -> Result<Value, Failure> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(at("read greeting"))?;
    if line.is_empty() {
        return Err(at("read greeting")(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection before greeting",
        )));
    }
    serde_json::from_str(&line).map_err(|e| {
        at("parse greeting")(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}: {line:?}"),
        ))
    })
}

fn connect(to: SocketAddr, text: &str, timeout: Duration) -> Result<Value, Failure> {
    let mut stream = dial(to, timeout)?;
    let peer = stream.peer_addr().map_err(at("getpeername"))?;
    let local = stream.local_addr().map_err(at("getsockname"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
    let server_saw = read_greeting(&mut reader)?;
    stream.write_all(text.as_bytes()).map_err(at("send"))?;
    let mut echo = vec![0; text.len()];
    reader.read_exact(&mut echo).map_err(at("read echo"))?;
    Ok(json!({
        "ok": true,
        "peer": canonical(peer).to_string(),
        "local": canonical(local).to_string(),
        "server_saw": server_saw,
        "echo": String::from_utf8_lossy(&echo),
    }))
}

fn bulk_send(
    to: SocketAddr,
    bytes: usize,
    write_size: usize,
    timeout: Duration,
) -> Result<Value, Failure> {
    let mut stream = dial(to, timeout)?;
    let chunk = vec![b'x'; write_size.max(1)];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).map_err(at("send"))?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write).map_err(at("shutdown"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(at("read the sink's count"))?;
    let secs = start.elapsed().as_secs_f64();
    let counted: usize = reply.trim().parse().map_err(|_| {
        at("read the sink's count")(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a count: {reply:?}"),
        ))
    })?;
    if counted != bytes {
        return Err(at("compare")(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sent {bytes} bytes but the sink counted {counted}"),
        )));
    }
    #[expect(clippy::cast_precision_loss, reason = "a throughput figure")]
    let gbit_per_s = bytes as f64 * 8.0 / secs / 1e9;
    Ok(
        json!({ "ok": true, "bytes": bytes, "write_size": write_size, "secs": secs, "gbit_per_s": gbit_per_s }),
    )
}

fn ping_pong(
    to: SocketAddr,
    count: usize,
    size: usize,
    timeout: Duration,
) -> Result<Value, Failure> {
    let mut stream = dial(to, timeout)?;
    stream.set_nodelay(true).map_err(at("set TCP_NODELAY"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
    read_greeting(&mut reader)?;
    let message = pattern(size);
    let mut echo = vec![0; size];
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(&message).map_err(at("send"))?;
        reader.read_exact(&mut echo).map_err(at("read echo"))?;
        micros.push(micros_since(start));
        if echo != message {
            return Err(at("compare")(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo differs from what was sent",
            )));
        }
    }
    let mut summary = latency_summary(&mut micros);
    summary.insert("ok".into(), true.into());
    summary.insert("count".into(), count.into());
    summary.insert("size".into(), size.into());
    Ok(Value::Object(summary))
}

/// A request of `size` bytes: a-z, repeated.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// p50/p99/p999/mean/max of latencies in µs, as `p50_us`…; sorts them.
fn latency_summary(micros: &mut [u64]) -> serde_json::Map<String, Value> {
    micros.sort_unstable();
    let per_mille = |p: usize| {
        micros
            .get((micros.len() * p / 1000).min(micros.len().saturating_sub(1)))
            .copied()
    };
    let mean = micros.iter().sum::<u64>().checked_div(micros.len() as u64);
    let summary = json!({
        "p50_us": per_mille(500),
        "p99_us": per_mille(990),
        "p999_us": per_mille(999),
        "mean_us": mean,
        "max_us": micros.last(),
    });
    match summary {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

fn hold(to: SocketAddr, hold: Duration, timeout: Duration) -> Result<Value, Failure> {
    const PERIOD: Duration = Duration::from_millis(50);
    let mut stream = dial(to, timeout)?;
    stream.set_nodelay(true).map_err(at("set TCP_NODELAY"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
    read_greeting(&mut reader)?;
    let start = Instant::now();
    let mut echo = [0u8; 1];
    let mut exchanges: u64 = 0;
    while exchanges == 0 || start.elapsed() < hold {
        let step = format!("echo after {} ms", start.elapsed().as_millis());
        stream.write_all(b"h").map_err(at(&step))?;
        reader.read_exact(&mut echo).map_err(at(&step))?;
        if exchanges == 0 {
            // Unbuffered, for a test waiting on this line while the connection lives.
            eprintln!("held");
        }
        exchanges += 1;
        thread::sleep(PERIOD);
    }
    Ok(json!({ "ok": true, "exchanges": exchanges }))
}

fn micros_since(instant: Instant) -> u64 {
    u64::try_from(instant.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let mut micros: Vec<u64> = (1..=1000).rev().collect();
        let summary = latency_summary(&mut micros);
        assert_eq!(summary["p50_us"], 501);
        assert_eq!(summary["p99_us"], 991);
        assert_eq!(summary["p999_us"], 1000);
        assert_eq!(summary["max_us"], 1000);
    }
}
