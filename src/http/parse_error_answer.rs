//! problem+json for the requests hyper refuses itself.
//!
//! hyper answers a request it cannot parse before the router sees it: a
//! malformed request line or header (400), a head over `max_header_size`
//! (431), a target over its length limit (414). It writes that answer with
//! an empty body and closes the connection. Every error of ours is
//! problem+json, so this wrapper of a connection's socket recognises those
//! answers as hyper writes them and sends a problem+json one in their place.
//!
//! Invariant: only hyper's own parse-error head is replaced. It is matched
//! exactly: one of the three status lines, then only `connection`,
//! `content-length: 0` and `date` headers, and the head starts the write.
//! Every answer of the router has a `content-type`, so none can match.
//! A response body written in a call of its own could, if it began with
//! exactly such a head: no route's body does (JSON, SSE frames, notes,
//! length-prefixed entry bundles, hashes), and none echoes a client's
//! bytes first. A replacement is written whole before hyper is told its
//! head was taken.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::problem::{CONTENT_TYPE, Problem};

/// The status lines hyper's `Server::on_error` writes, and what we say.
const REFUSALS: [(&[u8], StatusCode, &str, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        StatusCode::BAD_REQUEST,
        "malformed-request",
        "Malformed request",
        "the request line or a header is not valid HTTP/1.1 (for example a raw space or `>` in the target, or a header line without a colon); the connection is closed",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "head-too-large",
        "Request head too large",
        "the request line and headers exceed 64 KiB; the connection is closed",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        StatusCode::URI_TOO_LONG,
        "uri-too-long",
        "Request target too long",
        "the request target is longer than the parser accepts; the connection is closed",
    ),
];

/// The answer written in place of a parse-error head: its bytes, how many
/// are written, and the length of hyper's head it stands for.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

/// `io`, with hyper's bare parse-error answers replaced by problem+json.
pub(crate) struct ParseErrorAnswer<IO> {
    io: IO,
    replacing: Option<Replacement>,
}

impl<IO> ParseErrorAnswer<IO> {
    pub(crate) fn new(io: IO) -> ParseErrorAnswer<IO> {
        ParseErrorAnswer {
            io,
            replacing: None,
        }
    }
}

/// The replacement for `buf` if it starts with hyper's parse-error head.
fn replacement(buf: &[u8]) -> Option<Replacement> {
    // Cheap first: almost every write is a 2xx head or a body.
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let (status_line, status, kind, title, detail) =
        REFUSALS.iter().find(|(line, ..)| buf.starts_with(line))?;
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = std::str::from_utf8(&buf[status_line.len()..head_len - 2]).ok()?;
    let mut date = None;
    let mut empty = false;
    for line in headers.split_terminator("\r\n") {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "connection" => {}
            "content-length" if value == "0" => empty = true,
            "date" => date = Some(value),
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = Problem::new(*status, kind, title, *detail)
        .body()
        .to_string();
    let mut bytes = Vec::with_capacity(256 + body.len());
    bytes.extend_from_slice(status_line);
    bytes.extend_from_slice(format!("content-type: {CONTENT_TYPE}\r\n").as_bytes());
    bytes.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(b"connection: close\r\n");
    if let Some(date) = date {
        bytes.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body.as_bytes());
    Some(Replacement {
        bytes,
        written: 0,
        stands_for: head_len,
    })
}

impl<IO: AsyncWrite + Unpin> ParseErrorAnswer<IO> {
    /// Writes `first` (the start of what hyper offers) through, or its
    /// replacement whole. While a replacement is under way hyper offers the
    /// same bytes again (none were taken), so they are not looked at twice.
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        through: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            self.replacing = replacement(first);
        }
        let Some(replacing) = &mut self.replacing else {
            return through(Pin::new(&mut self.io), cx);
        };
        while replacing.written < replacing.bytes.len() {
            let rest = &replacing.bytes[replacing.written..];
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacing.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let taken = replacing.stands_for;
        self.replacing = None;
        Poll::Ready(Ok(taken))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ParseErrorAnswer<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ParseErrorAnswer<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write(cx, buf, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.get_mut()
            .write(cx, first, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 16:47:22 GMT\r\n\r\n";

    #[test]
    fn hypers_parse_error_heads_are_replaced() {
        let replaced = replacement(HYPER_431).expect("replaced");
        assert_eq!(replaced.stands_for, HYPER_431.len());
        let text = String::from_utf8(replaced.bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("date: Thu, 03 Dec 2026 16:47:22 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["type"], "urn:logbook:problem:head-too-large");
        assert_eq!(body["status"], 431);
        for (line, status, ..) in REFUSALS {
            let mut head = line.to_vec();
            head.extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n\r\n");
            let replaced = replacement(&head).expect("replaced");
            let text = String::from_utf8(replaced.bytes).unwrap();
            assert!(text.contains(&format!("\"status\":{}", status.as_u16())));
        }
    }

    #[test]
    fn other_answers_pass_through() {
        // One of ours: it has a content-type.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(replacement(ours).is_none());
        // A body follows, or an unexpected header, or not at the start.
        let sized = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(replacement(sized).is_none());
        let other = b"HTTP/1.1 400 Bad Request\r\nx-other: 1\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(other).is_none());
        let mut later = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
        later.extend_from_slice(HYPER_431);
        assert!(replacement(&later).is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        // A head cut short is not matched.
        assert!(replacement(&HYPER_431[..40]).is_none());
    }

    /// Written through a socket that takes a few bytes at a time, the
    /// replacement arrives whole and hyper is told its head was taken.
    #[tokio::test]
    async fn a_replacement_is_written_whole_through_short_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(7);
        let mut io = ParseErrorAnswer::new(near);
        let writer = tokio::spawn(async move {
            io.write_all(HYPER_431).await.unwrap();
            io.shutdown().await.unwrap();
        });
        let mut got = String::new();
        far.read_to_string(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
        assert!(got.ends_with("}"), "{got}");
        assert!(got.contains("urn:logbook:problem:head-too-large"), "{got}");
    }
}
