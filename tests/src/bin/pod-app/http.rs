//! The smallest HTTP/1.1 the tests need, with std only: a server that names itself in
//! every answer, and a keep-alive client that counts answers by status and body.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use super::{Failure, at, dial};

/// Answers every request on every connection with `200` and `name`.
pub fn serve(addr: SocketAddr, name: String) -> Result<Value, Failure> {
    let listener = TcpListener::bind(addr).map_err(at(&format!("bind {addr}")))?;
    println!("listening {addr}");
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        thread::spawn(move || {
            let _ = answer_all(stream, &name);
        });
    }
    unreachable!("incoming() never ends")
}

fn answer_all(stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let head = read_head(&mut reader)?;
        if head.is_empty() {
            return Ok(());
        }
        let length = content_length(&head);
        io::copy(&mut (&mut reader).take(length), &mut io::sink())?;
        let body = format!("{name}\n");
        // One write per response: split writes would wait on Nagle and delayed ACKs.
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
    }
}

/// What `get` sends.
pub struct Request {
    pub method: String,
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
    let method = &request.method;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut bodies: BTreeMap<String, u64> = BTreeMap::new();
    for index in 0..count {
        let step = format!("request {}", index + 1);
        let head =
            format!("{method} / HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n{extra}\r\n");
        writer.write_all(head.as_bytes()).map_err(at(&step))?;
        let head = read_head(&mut reader).map_err(at(&step))?;
        let status = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("none")
            .to_owned();
        let mut body = vec![0; usize::try_from(content_length(&head)).unwrap_or(0)];
        reader.read_exact(&mut body).map_err(at(&step))?;
        *statuses.entry(status).or_default() += 1;
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        *bodies.entry(body).or_default() += 1;
    }
    Ok(json!({ "ok": true, "statuses": statuses, "bodies": bodies }))
}

/// The request or response head, up to the blank line; empty at EOF.
fn read_head(reader: &mut impl BufRead) -> io::Result<String> {
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

fn content_length(head: &str) -> u64 {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}
