//! The part of SPDY/3.1 that Kubernetes' streaming clients speak: framing
//! (data and control frames), and header blocks compressed as one zlib
//! stream per direction with SPDY/3's preset dictionary. Flow control
//! (WINDOW_UPDATE) is read and ignored, as Go's spdystream does.
//!
//! Frames (all integers big-endian):
//! - data: `0 | stream id (31)`, `flags (8) | length (24)`, data; flag 1 = FIN;
//! - control: `1 | version (15) = 3 | type (16)`, `flags (8) | length (24)`,
//!   payload. Types: 1 SYN_STREAM (stream id, associated id, priority,
//!   slot, header block), 2 SYN_REPLY (stream id, header block),
//!   3 RST_STREAM, 4 SETTINGS, 6 PING, 7 GOAWAY, 8 HEADERS, 9 WINDOW_UPDATE.
//! - header block, once inflated: count (32), then per pair name length
//!   (32), name, value length (32), value.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{Stream, StreamExt};

/// Frames larger than this end the session (the length field allows 16 MiB).
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Largest inflated header block accepted.
const MAX_HEADER_BYTES: usize = 1 << 20;
const FLAG_FIN: u8 = 0x01;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// SYN_REPLY, SETTINGS, HEADERS, WINDOW_UPDATE and unknown types: read
    /// (header blocks inflated, to keep the zlib stream in step) and ignored.
    Other,
}

/// Why a session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: {0}")]
    Protocol(String),
    #[error("SPDY transport: {0}")]
    Io(#[from] std::io::Error),
}

fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// SPDY/3's header compression dictionary (spec §2.6.10.1): each word with
/// a 32-bit length prefix, then a run of common values.
fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416",
            "417502504505203 Non-Authoritative Information204 No Content301 Moved ",
            "Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 ",
            "Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr ",
            "May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, ",
            "GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,",
            "deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Reads frames from a byte stream (a socket, or a WebSocket's binary
/// messages, whose boundaries mean nothing).
pub struct Reader<S> {
    src: S,
    buf: BytesMut,
    inflate: Decompress,
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Reader<S> {
    pub fn new(src: S) -> Self {
        Reader {
            src,
            buf: BytesMut::new(),
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        loop {
            if self.buf.len() >= 8 {
                let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
                if len > MAX_FRAME_BYTES {
                    return Err(protocol(format!("frame of {len} bytes is too large")));
                }
                if self.buf.len() >= 8 + len {
                    let head = self.buf.split_to(8);
                    let payload = self.buf.split_to(len).freeze();
                    return self.decode(&head, payload).map(Some);
                }
            }
            match self.src.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e.into()),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(protocol("the stream ended inside a frame")),
            }
        }
    }

    fn decode(&mut self, head: &[u8], mut p: Bytes) -> Result<Frame, SpdyError> {
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        if first & 0x8000_0000 == 0 {
            return Ok(Frame::Data {
                stream: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: p,
            });
        }
        let version = (first >> 16) & 0x7fff;
        if version != 3 {
            return Err(protocol(format!(
                "control frame of version {version}, not 3"
            )));
        }
        let need = |p: &Bytes, n: usize, what: &str| match p.len() >= n {
            true => Ok(()),
            false => Err(protocol(format!("truncated {what}"))),
        };
        match first & 0xffff {
            1 => {
                need(&p, 10, "SYN_STREAM")?;
                let stream = p.get_u32() & 0x7fff_ffff;
                p.advance(6);
                let headers = self.headers(&p)?;
                Ok(Frame::SynStream {
                    stream,
                    fin: flags & FLAG_FIN != 0,
                    headers,
                })
            }
            2 | 8 => {
                need(&p, 4, "SYN_REPLY/HEADERS")?;
                p.advance(4);
                self.headers(&p)?;
                Ok(Frame::Other)
            }
            3 => {
                need(&p, 8, "RST_STREAM")?;
                Ok(Frame::RstStream {
                    stream: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                })
            }
            6 => {
                need(&p, 4, "PING")?;
                Ok(Frame::Ping(p.get_u32()))
            }
            7 => Ok(Frame::GoAway),
            _ => Ok(Frame::Other),
        }
    }

    /// Inflates and parses one header block.
    fn headers(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let raw = self.inflate_block(compressed)?;
        parse_headers(&raw)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("bad header block: {e}"))),
            }
            pos += (self.inflate.total_in() - before) as usize;
            if out.len() > MAX_HEADER_BYTES {
                return Err(protocol("header block too large"));
            }
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_headers(raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut b = raw;
    let bad = || protocol("malformed header block");
    let take_u32 = |b: &mut &[u8]| -> Result<usize, SpdyError> {
        if b.len() < 4 {
            return Err(bad());
        }
        Ok(b.get_u32() as usize)
    };
    let count = take_u32(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let field = |b: &mut &[u8]| -> Result<String, SpdyError> {
            let n = take_u32(b)?;
            if b.len() < n {
                return Err(bad());
            }
            let s = String::from_utf8_lossy(&b[..n]).into_owned();
            b.advance(n);
            Ok(s)
        };
        let name = field(&mut b)?;
        let value = field(&mut b)?;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// Encodes frames; holds the outgoing header compressor.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("zlib accepts a preset dictionary before the first block");
        Writer { deflate }
    }
}

impl Writer {
    /// A SYN_REPLY with no headers (all a Kubernetes stream needs).
    pub fn syn_reply(&mut self, stream: u32) -> Bytes {
        let block = self.deflate_block(&0u32.to_be_bytes());
        let mut payload = Vec::with_capacity(4 + block.len());
        payload.extend_from_slice(&stream.to_be_bytes());
        payload.extend_from_slice(&block);
        control(2, 0, &payload)
    }

    /// A SYN_STREAM (what a client sends; for tests).
    #[cfg(test)]
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> Bytes {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let block = self.deflate_block(&raw);
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&block);
        control(1, 0, &payload)
    }

    fn deflate_block(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            // Compressing into memory cannot fail short of a zlib bug.
            if self
                .deflate
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                return out;
            }
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

pub fn data(stream: u32, fin: bool, data: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f.into()
}

pub fn ping(id: u32) -> Bytes {
    control(6, 0, &id.to_be_bytes())
}

pub fn rst_stream(stream: u32, status: u32) -> Bytes {
    let mut p = stream.to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(3, 0, &p)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8003u16).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f.into()
}

/// The bytes a client sends on an upgraded SPDY connection.
pub type Incoming = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Runs `session` on `req`'s connection once hyper has upgraded it: the
/// session reads the client's bytes and sends whole frames to the sender,
/// which one writer task puts on the wire in order (and shuts down when
/// the session drops the sender). The caller answers 101 itself.
pub fn on_upgrade<F, Fut>(req: &mut axum::http::Request<axum::body::Body>, session: F)
where
    F: FnOnce(Incoming, tokio::sync::mpsc::Sender<Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        let (read, mut write) = tokio::io::split(upgraded);
        let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(f) = frames_rx.recv().await {
                if write.write_all(&f).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let incoming = tokio_util::io::ReaderStream::new(read);
        session(Box::pin(incoming), frames_tx).await;
        let _ = writer.await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for x in d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(adler32(dictionary()), 0xe3c6_a7c2);
    }

    fn reader(chunks: Vec<Bytes>) -> Reader<impl Stream<Item = std::io::Result<Bytes>> + Unpin> {
        Reader::new(futures::stream::iter(chunks.into_iter().map(Ok)))
    }

    #[tokio::test]
    async fn frames_round_trip_across_arbitrary_chunks() {
        let mut w = Writer::default();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&w.syn_stream(1, &[("streamtype", "error"), ("port", "80")]));
        bytes.extend_from_slice(&w.syn_stream(3, &[("streamtype", "data"), ("port", "80")]));
        bytes.extend_from_slice(&data(3, true, b"hello"));
        bytes.extend_from_slice(&ping(7));
        bytes.extend_from_slice(&w.syn_reply(5));
        bytes.extend_from_slice(&rst_stream(3, 5));
        // One byte per message: boundaries must not matter.
        let chunks = bytes
            .iter()
            .map(|b| Bytes::copy_from_slice(&[*b]))
            .collect();
        let mut r = reader(chunks);
        let headers = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".into(), "80".into()),
            ]
        };
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::SynStream {
                stream: 1,
                fin: false,
                headers: headers("error")
            })
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::SynStream {
                stream: 3,
                fin: false,
                headers: headers("data")
            })
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(r.next().await.unwrap(), Some(Frame::Ping(7)));
        assert_eq!(r.next().await.unwrap(), Some(Frame::Other));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::RstStream {
                stream: 3,
                status: 5
            })
        );
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut r = reader(vec![Bytes::from_static(&[
            0x80, 0x02, 0, 1, 0, 0, 0, 2, 0, 0,
        ])]);
        assert!(r.next().await.is_err());
        let mut w = Writer::default();
        let mut syn = w.syn_stream(1, &[("a", "b")]).to_vec();
        let n = syn.len();
        syn[n - 3] ^= 0xff;
        let mut r = reader(vec![Bytes::from(syn)]);
        let _ = r.next().await; // an error or garbage headers, never a panic
        let mut r = reader(vec![Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0])]);
        assert!(r.next().await.is_err());
    }
}
