//! `pod-app rate`: an open-loop load at a fixed rate, timed from when each request was
//! due (so a late send or a queue in the path shows in the latency).

use std::{
    io::{BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Failure, Options, at, dial, latency_summary, micros_since, pattern, read_greeting};

/// What `rate` is asked for.
pub struct RateOptions {
    rate: usize,
    duration: Duration,
    size: usize,
    connections: usize,
}

impl RateOptions {
    pub fn parse(options: &Options) -> Result<Self, String> {
        let load = Self {
            rate: options.number("rate")?,
            duration: Duration::from_millis(options.number("duration-ms")? as u64),
            size: options.number("size")?,
            connections: match options.get("connections") {
                Some(_) => options.number("connections")?,
                None => 1,
            },
        };
        if load.rate == 0 || load.size == 0 || load.connections == 0 {
            return Err("--rate, --size and --connections must be at least 1".to_owned());
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
}

/// What one connection of `rate` measured.
#[derive(Default)]
struct ConnectionLoad {
    /// From when each answered request was due to its answer, in µs.
    latency_us: Vec<u64>,
    /// How late each request went out, in µs.
    lag_us: Vec<u64>,
    unanswered: usize,
    error: Option<String>,
    last_answer: Option<Instant>,
}

pub fn rate(to: SocketAddr, load: &RateOptions, timeout: Duration) -> Result<Value, Failure> {
    let message = pattern(load.size);
    let mut connections = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let stream = dial(to, timeout)?;
        stream.set_nodelay(true).map_err(at("set TCP_NODELAY"))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
        read_greeting(&mut reader)?;
        connections.push((stream, reader));
    }
    // Every connection is up before the clock starts.
    let start = Instant::now();
    let results: Vec<ConnectionLoad> = thread::scope(|scope| {
        let running: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(k, (stream, reader))| {
                let message = &message;
                scope.spawn(move || run_connection(k, stream, reader, load, start, message))
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().unwrap_or_default())
            .collect()
    });
    let mut latency_us: Vec<u64> = results.iter().flat_map(|r| r.latency_us.clone()).collect();
    let mut lag_us: Vec<u64> = results.iter().flat_map(|r| r.lag_us.clone()).collect();
    let errors: usize = results.iter().map(|r| r.unanswered).sum();
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
        ("size", json!(load.size)),
        ("requests", json!(load.total())),
        ("answered", json!(latency_us.len())),
        ("errors", json!(errors)),
        ("first_error", json!(first_error)),
        ("achieved_per_s", json!(achieved)),
        ("send_lag_p99_us", json!(lag_p99)),
    ] {
        report.insert(key.to_owned(), value);
    }
    Ok(Value::Object(report))
}

/// Connection `k` of `rate`: a thread sends requests `k`, `k + connections`, … when due
/// while this one reads the echoes, in order, and times each from when it was due.
fn run_connection(
    k: usize,
    stream: TcpStream,
    mut reader: BufReader<TcpStream>,
    load: &RateOptions,
    start: Instant,
    message: &[u8],
) -> ConnectionLoad {
    let mine: Vec<usize> = (k..load.total()).step_by(load.connections).collect();
    let (due_tx, due_rx) = mpsc::channel::<Instant>();
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
                // Before the write, so the reader always knows what it waits for.
                if due_tx.send(due).is_err() {
                    break;
                }
                if let Err(error) = (&stream).write_all(message) {
                    return (lag_us, Some(format!("send: {error}")));
                }
            }
            drop(due_tx);
            (lag_us, None)
        });
        let mut echo = vec![0; message.len()];
        for due in &due_rx {
            if let Err(error) = reader.read_exact(&mut echo) {
                result.error = Some(format!("read echo: {error}"));
                break;
            }
            if echo != message {
                result.error = Some("compare: the echo differs from what was sent".to_owned());
                break;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_rate_spreads_its_requests_evenly_over_the_duration() {
        let load = RateOptions {
            rate: 10_000,
            duration: Duration::from_millis(2_500),
            size: 64,
            connections: 4,
        };
        assert_eq!(load.total(), 25_000);
        assert_eq!(load.due(0), Duration::ZERO);
        assert_eq!(load.due(1), Duration::from_micros(100));
        assert_eq!(load.due(24_999), Duration::from_micros(2_499_900));
    }
}
