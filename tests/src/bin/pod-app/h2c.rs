//! The least HTTP/2 `pod-app http` needs to answer a load generator that speaks HTTP/2
//! with prior knowledge (h2c, as h2load does), with std only: a benchmark's direct
//! path, with no proxy in between to turn HTTP/2 into HTTP/1.1.
//!
//! Every request (a HEADERS frame, and its DATA if any, up to END_STREAM) is answered
//! `200` with the server's name as the body, whatever it asked: the request's headers
//! are not decoded at all (HPACK state only matters to a decoder, and the answer's one
//! header is a static-table index). SETTINGS and PING are acknowledged, GOAWAY ends
//! the connection, everything else is ignored. It relies on the client to keep its
//! receive windows open, as every HTTP/2 client does, and on headers fitting one
//! frame (no CONTINUATION).

use std::io::{self, BufReader, Read, Write};

/// What a client sends first, before its SETTINGS.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HPACK: `:status: 200`, entry 8 of the static table, indexed.
const STATUS_200: u8 = 0x88;

/// Serves one connection whose preface is still unread in `reader`, until the client
/// closes it or says GOAWAY.
pub fn serve<R: Read>(
    reader: &mut BufReader<R>,
    writer: &mut impl Write,
    body: &[u8],
) -> io::Result<()> {
    let mut preface = [0; PREFACE.len()];
    reader.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/2 preface",
        ));
    }
    let mut out = Vec::new();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let mut payload = Vec::new();
    loop {
        if reader.buffer().is_empty() && !out.is_empty() {
            // Everything read so far is answered: one write for all of it.
            writer.write_all(&out)?;
            out.clear();
        }
        let mut head = [0; 9];
        match reader.read_exact(&mut head) {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            result => result?,
        }
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        payload.resize(length, 0);
        reader.read_exact(&mut payload)?;
        match kind {
            HEADERS | DATA if flags & END_STREAM != 0 => {
                frame(&mut out, HEADERS, END_HEADERS, stream, &[STATUS_200]);
                frame(&mut out, DATA, END_STREAM, stream, body);
            }
            SETTINGS if flags & ACK == 0 => frame(&mut out, SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => frame(&mut out, PING, ACK, 0, &payload),
            GOAWAY => {
                writer.write_all(&out)?;
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Appends a frame to `out`.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("frames here are small");
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ending_its_stream_is_answered_and_settings_acknowledged() {
        let mut input = PREFACE.to_vec();
        frame(&mut input, SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        // A GET's headers (their HPACK bytes are never read), ending stream 1.
        frame(
            &mut input,
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &[0x82, 0x86],
        );
        let mut output = Vec::new();
        serve(
            &mut BufReader::new(io::Cursor::new(input)),
            &mut output,
            b"v1\n",
        )
        .unwrap();
        let mut want = Vec::new();
        frame(&mut want, SETTINGS, 0, 0, &[]);
        frame(&mut want, SETTINGS, ACK, 0, &[]);
        frame(&mut want, HEADERS, END_HEADERS, 1, &[STATUS_200]);
        frame(&mut want, DATA, END_STREAM, 1, b"v1\n");
        assert_eq!(output, want);
    }
}
