//! `pod-app rate`: an open-loop load at a fixed rate, timed from when each request was
//! due (so a late send or a queue in the path shows in the latency): of `--size` bytes
//! echoed by `serve`, or with `--http PATHS` of HTTP/1.1 `GET`s answered by any HTTP
//! server, the paths taken in turn (`/v1,/v2,/v3`).
//!
//! HTTP requests are pipelined like the echoes: each goes out when due, and the
//! responses are matched to them in order (status line, then a `content-length` body;
//! a chunked response is an error). An answer whose status is not 2xx counts as an
//! error, and the report adds `statuses` and `bodies` (answers by status and by body).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Failure, Options, at, dial, http, latency_summary, micros_since, pattern, read_greeting,
};

/// What `rate` is asked for.
pub struct RateOptions {
    rate: usize,
    duration: Duration,
    connections: usize,
    exchange: Exchange,
}

/// What each request is, and so how its answer is read.
enum Exchange {
    /// `--size` bytes, echoed by `serve` after its greeting line.
    Echo { size: usize },
    /// `GET` of each of `paths` in turn, with `host` (default: the address dialled).
    Http {
        paths: Vec<String>,
        host: Option<String>,
    },
}

impl RateOptions {
    pub fn parse(options: &Options) -> Result<Self, String> {
        let exchange = match options.get("http") {
            Some(paths) => Exchange::Http {
                paths: paths.split(',').map(str::to_owned).collect(),
                host: options.get("host").map(str::to_owned),
            },
            None => Exchange::Echo {
                size: options.number("size")?,
            },
        };
        let load = Self {
            rate: options.number("rate")?,
            duration: Duration::from_millis(options.number("duration-ms")? as u64),
            connections: match options.get("connections") {
                Some(_) => options.number("connections")?,
                None => 1,
            },
            exchange,
        };
        let empty = match &load.exchange {
            Exchange::Echo { size } => *size == 0,
            Exchange::Http { paths, .. } => paths.iter().any(|p| !p.starts_with('/')),
        };
        if load.rate == 0 || load.connections == 0 || empty {
            return Err(
                "--rate, --size and --connections must be at least 1, --http paths start with /"
                    .to_owned(),
            );
        }
        Ok(load)
    }

    /// How many requests the whole run sends.
    fn total(&self) -> usize {
        let millis = usize::try_from(self.duration.as_millis()).unwrap_or(usize::MAX);
        self.rate.saturating_mul(millis) / 1000
    }

    /// When request `j` is due, after the start.
    fn due(&self, j: usize) -> Duration {
        let nanos = j as u128 * 1_000_000_000 / self.rate as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How long after the last request was due the answers may still come: as long as
    /// the run (an overloaded path drains its queue at less than the rate), then they
    /// are counted unanswered.
    fn drain(&self) -> Duration {
        self.duration.max(Duration::from_secs(1))
    }

    fn http(&self) -> bool {
        matches!(self.exchange, Exchange::Http { .. })
    }

    /// The distinct requests, sent in turn: request `j` is `requests[j % len]`.
    fn requests(&self, to: SocketAddr) -> Vec<Vec<u8>> {
        match &self.exchange {
            Exchange::Echo { size } => vec![pattern(*size)],
            Exchange::Http { paths, host } => {
                let host = host.clone().unwrap_or_else(|| to.to_string());
                paths
                    .iter()
                    .map(|path| format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").into_bytes())
                    .collect()
            }
        }
    }
}

/// What one connection of `rate` measured.
#[derive(Default)]
struct ConnectionLoad {
    /// From when each answered request was due to its answer, in µs.
    latency_us: Vec<u64>,
    /// How late each request went out, in µs.
    lag_us: Vec<u64>,
    unanswered: usize,
    /// HTTP answers whose status was not 2xx.
    bad_status: usize,
    /// HTTP answers by status and by body.
    statuses: BTreeMap<String, u64>,
    bodies: BTreeMap<String, u64>,
    error: Option<String>,
    last_answer: Option<Instant>,
}

pub fn rate(to: SocketAddr, load: &RateOptions, timeout: Duration) -> Result<Value, Failure> {
    let requests = load.requests(to);
    let mut connections = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let stream = dial(to, timeout)?;
        stream.set_nodelay(true).map_err(at("set TCP_NODELAY"))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
        if !load.http() {
            read_greeting(&mut reader)?;
        }
        connections.push((stream, reader));
    }
    // Every connection is up before the clock starts.
    let start = Instant::now();
    let results: Vec<ConnectionLoad> = thread::scope(|scope| {
        let running: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(k, (stream, reader))| {
                let requests = &requests;
                scope.spawn(move || run_connection(k, stream, reader, load, start, requests))
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().unwrap_or_default())
            .collect()
    });
    Ok(Value::Object(summarize(&results, load, start)))
}

/// The report of all connections' results.
fn summarize(
    results: &[ConnectionLoad],
    load: &RateOptions,
    start: Instant,
) -> serde_json::Map<String, Value> {
    let mut latency_us: Vec<u64> = results.iter().flat_map(|r| r.latency_us.clone()).collect();
    let mut lag_us: Vec<u64> = results.iter().flat_map(|r| r.lag_us.clone()).collect();
    let errors: usize = results.iter().map(|r| r.unanswered + r.bad_status).sum();
    let first_error = results.iter().find_map(|r| r.error.clone());
    let secs = results
        .iter()
        .filter_map(|r| r.last_answer)
        .max()
        .map_or(0.0, |last| (last - start).as_secs_f64());
    #[expect(clippy::cast_precision_loss, reason = "a rate figure")]
    let achieved = if secs > 0.0 {
        latency_us.len() as f64 / secs
    } else {
        0.0
    };
    lag_us.sort_unstable();
    let lag_p99 = lag_us.get(lag_us.len() * 99 / 100).copied();
    let mut report = latency_summary(&mut latency_us);
    for (key, value) in [
        ("ok", json!(true)),
        ("rate", json!(load.rate)),
        ("connections", json!(load.connections)),
        ("requests", json!(load.total())),
        ("answered", json!(latency_us.len())),
        ("errors", json!(errors)),
        ("first_error", json!(first_error)),
        ("achieved_per_s", json!(achieved)),
        ("send_lag_p99_us", json!(lag_p99)),
    ] {
        report.insert(key.to_owned(), value);
    }
    match &load.exchange {
        Exchange::Echo { size } => {
            report.insert("size".to_owned(), json!(size));
        }
        Exchange::Http { .. } => {
            let tally = |pick: fn(&ConnectionLoad) -> &BTreeMap<String, u64>| {
                let mut all: BTreeMap<String, u64> = BTreeMap::new();
                for (key, count) in results.iter().flat_map(pick) {
                    *all.entry(key.clone()).or_default() += count;
                }
                json!(all)
            };
            report.insert("statuses".to_owned(), tally(|r| &r.statuses));
            report.insert("bodies".to_owned(), tally(|r| &r.bodies));
        }
    }
    report
}

/// Connection `k` of `rate`: a thread sends requests `k`, `k + connections`, … when due
/// while this one reads the answers, in order, and times each from when it was due.
fn run_connection(
    k: usize,
    stream: TcpStream,
    mut reader: BufReader<TcpStream>,
    load: &RateOptions,
    start: Instant,
    requests: &[Vec<u8>],
) -> ConnectionLoad {
    let mine: Vec<usize> = (k..load.total()).step_by(load.connections).collect();
    let (due_tx, due_rx) = mpsc::channel::<(Instant, &[u8])>();
    let broken = AtomicBool::new(false);
    let mut result = ConnectionLoad::default();
    thread::scope(|scope| {
        let sender = scope.spawn(|| -> (Vec<u64>, Option<String>) {
            let mut lag_us = Vec::with_capacity(mine.len());
            for &j in &mine {
                let due = start + load.due(j);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                if broken.load(Ordering::Relaxed) {
                    break;
                }
                lag_us.push(micros_since(due));
                let request = requests[j % requests.len()].as_slice();
                // Before the write, so the reader always knows what it waits for.
                if due_tx.send((due, request)).is_err() {
                    break;
                }
                if let Err(error) = (&stream).write_all(request) {
                    return (lag_us, Some(format!("send: {error}")));
                }
            }
            drop(due_tx);
            (lag_us, None)
        });
        let mut echo = Vec::new();
        let give_up = start + load.duration + load.drain();
        for (due, request) in &due_rx {
            if Instant::now() > give_up {
                result.error = Some(format!(
                    "still unanswered {:?} after the last request was due",
                    load.drain()
                ));
                break;
            }
            let answer = if load.http() {
                read_response(&mut reader).map(Some)
            } else {
                read_echo(&mut reader, request, &mut echo).map(|()| None)
            };
            match answer {
                Err(error) => {
                    result.error = Some(error);
                    break;
                }
                Ok(Some((status, body))) => {
                    if !status.starts_with('2') {
                        result.bad_status += 1;
                        result
                            .error
                            .get_or_insert_with(|| format!("answered {status}"));
                    }
                    *result.statuses.entry(status).or_default() += 1;
                    *result.bodies.entry(body).or_default() += 1;
                }
                Ok(None) => {}
            }
            result.latency_us.push(micros_since(due));
            result.last_answer = Some(Instant::now());
        }
        broken.store(true, Ordering::Relaxed);
        // Unblocks a sender stuck on a full socket once the reader gave up.
        let _ = stream.shutdown(Shutdown::Both);
        let (lag_us, send_error) = sender.join().unwrap_or_default();
        result.lag_us = lag_us;
        result.error = result.error.take().or(send_error);
    });
    result.unanswered = mine.len() - result.latency_us.len();
    result
}

/// Reads the echo of `request` into `echo` and checks it.
fn read_echo(reader: &mut impl Read, request: &[u8], echo: &mut Vec<u8>) -> Result<(), String> {
    echo.resize(request.len(), 0);
    reader
        .read_exact(echo)
        .map_err(|error| format!("read echo: {error}"))?;
    if echo != request {
        return Err("compare: the echo differs from what was sent".to_owned());
    }
    Ok(())
}

/// Reads one HTTP/1.1 response: its status and its body (trimmed).
fn read_response(reader: &mut impl BufRead) -> Result<(String, String), String> {
    let head = http::read_head(reader).map_err(|error| format!("read response: {error}"))?;
    if head.is_empty() {
        return Err("read response: the server closed the connection".to_owned());
    }
    if http::header(&head, "transfer-encoding").is_some() {
        return Err(format!(
            "a chunked response, which rate cannot read: {head:?}"
        ));
    }
    let length = usize::try_from(http::content_length(&head)).unwrap_or(usize::MAX);
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|error| format!("read body: {error}"))?;
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    Ok((http::status(&head).to_owned(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_rate_spreads_its_requests_evenly_over_the_duration() {
        let load = RateOptions {
            rate: 10_000,
            duration: Duration::from_millis(2_500),
            connections: 4,
            exchange: Exchange::Echo { size: 64 },
        };
        assert_eq!(load.total(), 25_000);
        assert_eq!(load.due(0), Duration::ZERO);
        assert_eq!(load.due(1), Duration::from_micros(100));
        assert_eq!(load.due(24_999), Duration::from_micros(2_499_900));
    }

    #[test]
    fn http_answers_are_read_in_order_with_their_status_and_body() {
        let wire = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nv1\n\
                    HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n";
        let mut reader = std::io::Cursor::new(wire.as_bytes());
        assert_eq!(
            read_response(&mut reader),
            Ok(("200".to_owned(), "v1".to_owned()))
        );
        assert_eq!(
            read_response(&mut reader),
            Ok(("503".to_owned(), String::new()))
        );
        assert!(read_response(&mut reader).is_err(), "EOF is an error");
    }

    #[test]
    fn http_requests_take_the_paths_in_turn() {
        let load = RateOptions {
            rate: 1,
            duration: Duration::from_secs(1),
            connections: 1,
            exchange: Exchange::Http {
                paths: vec!["/v1".to_owned(), "/v2".to_owned()],
                host: None,
            },
        };
        let requests = load.requests(SocketAddr::from(([198, 18, 0, 1], 80)));
        assert_eq!(
            requests,
            [
                b"GET /v1 HTTP/1.1\r\nhost: 198.18.0.1:80\r\n\r\n".to_vec(),
                b"GET /v2 HTTP/1.1\r\nhost: 198.18.0.1:80\r\n\r\n".to_vec(),
            ]
        );
    }
}
