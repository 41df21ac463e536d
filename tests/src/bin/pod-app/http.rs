//! The smallest HTTP/1.1 the tests need, with std only: a server that names itself in
//! every answer (and misbehaves on request, like httpbin), a keep-alive client that
//! counts answers by status and body, and a client of an `Upgrade` echo.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Failure, at, dial, h2c};

/// What the server is.
pub struct Server {
    /// The body of every answer (the pod's version, say).
    pub name: String,
    /// The status of a plain request (`--status`, 200 by default).
    pub status: u16,
}

/// Answers every request on every connection with the server's status and name, except:
/// `/status/N` answers N; `/delay/MS` answers after MS milliseconds; `/flaky/F/E`
/// answers 503 to the first F of every E such requests (counted across connections); a
/// request with `Connection: upgrade` gets `101` and then its bytes echoed back. A
/// connection that opens with HTTP/2's preface (prior knowledge) is served by [`h2c`]:
/// every request answered 200 with the name.
pub fn serve(addr: SocketAddr, server: Server) -> Result<Value, Failure> {
    let listener = TcpListener::bind(addr).map_err(at(&format!("bind {addr}")))?;
    println!("listening {addr}");
    let server = Arc::new(server);
    let flaky_count = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let (server, flaky_count) = (Arc::clone(&server), Arc::clone(&flaky_count));
        thread::spawn(move || {
            let _ = answer_all(stream, &server, &flaky_count);
        });
    }
    unreachable!("incoming() never ends")
}

fn answer_all(stream: TcpStream, server: &Server, flaky_count: &AtomicU64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    if reader.fill_buf()?.starts_with(&h2c::PREFACE[..4]) {
        return h2c::serve(
            &mut reader,
            &mut writer,
            format!("{}\n", server.name).as_bytes(),
        );
    }
    loop {
        let head = read_head(&mut reader)?;
        if head.is_empty() {
            return Ok(());
        }
        let length = content_length(&head);
        io::copy(&mut (&mut reader).take(length), &mut io::sink())?;
        if let Some(protocol) = header(&head, "upgrade")
            && header(&head, "connection")
                .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade"))
        {
            let switch = format!(
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
            );
            writer.write_all(switch.as_bytes())?;
            io::copy(&mut reader, &mut writer)?;
            return Ok(());
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let status = status_for(path, server.status, flaky_count);
        let body = format!("{}\n", server.name);
        // One write per response: split writes would wait on Nagle and delayed ACKs.
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
    }
}

/// The status `path` asks for (sleeping first for `/delay/MS`).
fn status_for(path: &str, status: u16, flaky_count: &AtomicU64) -> u16 {
    let parts: Vec<u64> = path
        .split('/')
        .skip(2)
        .filter_map(|part| part.parse().ok())
        .collect();
    match (path.split('/').nth(1), parts.as_slice()) {
        (Some("status"), [code]) => u16::try_from(*code).unwrap_or(500),
        (Some("delay"), [millis]) => {
            thread::sleep(Duration::from_millis(*millis));
            status
        }
        (Some("flaky"), [fail, every]) if *every > 0 => {
            let seen = flaky_count.fetch_add(1, Ordering::SeqCst);
            if seen % every < *fail { 503 } else { status }
        }
        _ => status,
    }
}

/// An `Upgrade` to `protocol` at `to` (as `host`), then `text` sent and its echo read.
pub fn upgrade(
    to: SocketAddr,
    host: &str,
    protocol: &str,
    text: &str,
    timeout: Duration,
) -> Result<Value, Failure> {
    let stream = dial(to, timeout)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
    let mut writer = stream;
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: {host}\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
    );
    writer
        .write_all(request.as_bytes())
        .map_err(at("handshake"))?;
    let head = read_head(&mut reader).map_err(at("101"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("none").to_owned();
    if status != "101" {
        return Ok(json!({ "ok": false, "status": status, "error": head }));
    }
    writer.write_all(text.as_bytes()).map_err(at("send"))?;
    let mut echo = vec![0; text.len()];
    reader.read_exact(&mut echo).map_err(at("echo"))?;
    Ok(json!({ "ok": true, "status": status, "echo": String::from_utf8_lossy(&echo) }))
}

/// What `get` sends.
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub header: Option<String>,
}

/// `count` requests for `/` (no body) on one connection; statuses and bodies counted.
pub fn get(
    to: SocketAddr,
    count: usize,
    request: &Request,
    timeout: Duration,
) -> Result<Value, Failure> {
    let stream = dial(to, timeout)?;
    stream.set_nodelay(true).map_err(at("set TCP_NODELAY"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(at("dup socket"))?);
    let mut writer = stream;
    let host = request.host.clone().unwrap_or_else(|| to.to_string());
    let extra = request
        .header
        .as_ref()
        .map(|h| format!("{h}\r\n"))
        .unwrap_or_default();
    let (method, path) = (&request.method, &request.path);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut bodies: BTreeMap<String, u64> = BTreeMap::new();
    let (mut fastest, mut slowest) = (u128::MAX, 0);
    for index in 0..count {
        let step = format!("request {}", index + 1);
        let sent = Instant::now();
        let head =
            format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n{extra}\r\n");
        writer.write_all(head.as_bytes()).map_err(at(&step))?;
        let head = read_head(&mut reader).map_err(at(&step))?;
        let status = status(&head).to_owned();
        let mut body = vec![0; usize::try_from(content_length(&head)).unwrap_or(0)];
        reader.read_exact(&mut body).map_err(at(&step))?;
        let millis = sent.elapsed().as_millis();
        (fastest, slowest) = (fastest.min(millis), slowest.max(millis));
        *statuses.entry(status).or_default() += 1;
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        *bodies.entry(body).or_default() += 1;
    }
    Ok(json!({
        "ok": true, "statuses": statuses, "bodies": bodies,
        "fastest_ms": fastest, "slowest_ms": slowest,
    }))
}

/// The status code of a response head (`none` when it has no status line).
pub(super) fn status(head: &str) -> &str {
    head.lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("none")
}

/// The value of header `name` in a head, if present.
pub(super) fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

/// The request or response head, up to the blank line; empty at EOF.
pub(super) fn read_head(reader: &mut impl BufRead) -> io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return if head.is_empty() {
                Ok(head)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut-off head"))
            };
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

pub(super) fn content_length(head: &str) -> u64 {
    header(head, "content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}
