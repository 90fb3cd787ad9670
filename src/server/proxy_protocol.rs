//! The PROXY protocol (v1 text and v2 binary), as sent by load balancers
//! such as AWS NLB to pass the real client address.
//!
//! Owns reading the header off a fresh connection and deciding whether to
//! believe it: only peers in `server.proxy_protocol_from` may send one; a
//! header from anyone else closes the connection, and so does a listed peer
//! that sends none unless `server.proxy_protocol_optional` is set. Parsing
//! itself is the `ppp` crate's. The bytes read past the header (or all of
//! them, when there was no header) are replayed by [`Prefixed`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::PartialResult;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// RFC-style bound from the spec: a v1 line is at most 107 bytes.
const V1_MAX: usize = 107;
/// v2 allows 64 KiB of TLVs; load balancers send a few hundred bytes.
const V2_MAX: usize = 16 + 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("PROXY protocol header too long")]
    TooLong,
    #[error("connection closed before the PROXY protocol header ended")]
    Eof,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What the start of a connection held.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// No PROXY header: the bytes read belong to the client's protocol.
    Absent,
    /// A header naming the original client.
    Proxied(SocketAddr),
    /// A header with the LOCAL command or an unknown/unix family (health
    /// checks): the TCP peer stands for itself.
    Local,
}

/// Reads a PROXY header if one is there. Returns what it found and the
/// stream with every byte that is not part of the header still to be read.
pub async fn read_header<S: AsyncRead + Unpin>(
    mut stream: S,
) -> Result<(ProxyHeader, Prefixed<S>), ProxyHeaderError> {
    let mut buf = Vec::with_capacity(256);
    // Read until the bytes seen so far rule out both signatures or match one.
    loop {
        let v2_possible = buf.len() < 12 && V2_SIGNATURE.starts_with(&buf)
            || buf.len() >= 12 && buf.starts_with(V2_SIGNATURE);
        let v1_possible = buf.len() < 6 && V1_PREFIX.starts_with(&buf)
            || buf.len() >= 6 && buf.starts_with(V1_PREFIX);
        if !v2_possible && !v1_possible {
            return Ok((ProxyHeader::Absent, Prefixed::new(buf, stream)));
        }
        if v2_possible && buf.len() >= 16 {
            let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if total > V2_MAX {
                return Err(ProxyHeaderError::TooLong);
            }
            while buf.len() < total {
                let missing = total - buf.len();
                read_more(&mut stream, &mut buf, missing).await?;
            }
            let rest = buf.split_off(total);
            let header = match ppp::v2::Header::try_from(buf.as_slice()) {
                Ok(h) => h,
                Err(_) => return Err(ProxyHeaderError::Malformed),
            };
            let found = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => ProxyHeader::Local,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    ProxyHeader::Proxied(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    ProxyHeader::Proxied(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => ProxyHeader::Local,
            };
            return Ok((found, Prefixed::new(rest, stream)));
        }
        if v1_possible && buf.len() >= 6 {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let total = end + 2;
                let rest = buf.split_off(total);
                let parsed = ppp::v1::Header::try_from(buf.as_slice());
                let header = match parsed {
                    Ok(h) => h,
                    Err(e) if e.is_incomplete() => return Err(ProxyHeaderError::Malformed),
                    Err(_) => return Err(ProxyHeaderError::Malformed),
                };
                let found = match header.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        ProxyHeader::Proxied(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        ProxyHeader::Proxied(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    ppp::v1::Addresses::Unknown => ProxyHeader::Local,
                };
                return Ok((found, Prefixed::new(rest, stream)));
            }
            if buf.len() >= V1_MAX {
                return Err(ProxyHeaderError::TooLong);
            }
        }
        let want = if v2_possible { 16 } else { V1_MAX };
        let missing = want.saturating_sub(buf.len()).max(1);
        read_more(&mut stream, &mut buf, missing).await?;
    }
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    at_most: usize,
) -> Result<(), ProxyHeaderError> {
    let mut chunk = vec![0u8; at_most.min(4096)];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(ProxyHeaderError::Eof);
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// A stream that first yields bytes already read from it. Written here
/// because hyper-util's equivalent (`Rewind`) is private and the need is
/// twenty lines.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> Prefixed<S> {
    /// The bytes read and not yet replayed.
    pub fn pending(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }

    /// Puts `bytes` back in front of whatever is still waiting to be
    /// replayed (bytes hyper read ahead before its connection was taken
    /// apart).
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut prefix = Vec::with_capacity(bytes.len() + self.prefix.len() - self.pos);
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(&self.prefix[self.pos..]);
        self.prefix = prefix;
        self.pos = 0;
    }

    /// Reads what the peer has sent into the replay buffer, keeping at most
    /// `max` (≤ 8 KiB) bytes waiting there; `Ok(0)` at end of stream (or
    /// when `max` bytes are already waiting). The read goes through a stack
    /// buffer, so the replay buffer holds only what arrived: a connection
    /// keeps no read-ahead capacity beside hyper's own buffer.
    pub async fn read_ahead(&mut self, max: usize) -> io::Result<usize> {
        self.prefix.drain(..self.pos);
        self.pos = 0;
        let room = max.saturating_sub(self.prefix.len()).min(8192);
        if room == 0 {
            return Ok(0);
        }
        std::future::poll_fn(|cx| {
            let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut read = ReadBuf::uninit(&mut stack[..room]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    self.prefix.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                other => other.map_ok(|()| 0),
            }
        })
        .await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(out.remaining());
            out.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn parse(input: &[u8]) -> Result<(ProxyHeader, Vec<u8>), ProxyHeaderError> {
        let (h, mut rest) = read_header(input).await?;
        let mut out = Vec::new();
        rest.read_to_end(&mut out).await?;
        Ok((h, out))
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6() {
        let (h, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(h, ProxyHeader::Proxied("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 5555 443\r\n")
            .await
            .unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied("[2001:db8::1]:5555".parse().unwrap())
        );
        let (h, _) = parse(b"PROXY UNKNOWN\r\n").await.unwrap();
        assert_eq!(h, ProxyHeader::Local);
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"\x16\x03\x01hello");
        let (h, rest) = parse(&input).await.unwrap();
        assert_eq!(h, ProxyHeader::Proxied(src));
        assert_eq!(rest, b"\x16\x03\x01hello");

        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (h, _) = parse(&local).await.unwrap();
        assert_eq!(h, ProxyHeader::Local);
    }

    #[tokio::test]
    async fn absent_keeps_every_byte() {
        let (h, rest) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(h, ProxyHeader::Absent);
        assert_eq!(rest, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // "PRO" then something else: not a header.
        let (h, rest) = parse(b"PROPFIND / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(h, ProxyHeader::Absent);
        assert_eq!(rest, b"PROPFIND / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn unread_goes_before_what_is_still_waiting() {
        let mut p = Prefixed::new(b"abcdef".to_vec(), &b"ghi"[..]);
        let mut two = [0u8; 2];
        p.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"ab");
        p.unread(b"XY");
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"XYcdefghi");
        p.unread(b"again");
        out.clear();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"again");
    }

    /// A header cut anywhere across reads (as TCP may deliver it) is read
    /// whole, and the bytes after it stay in the stream, in order.
    #[tokio::test]
    async fn a_header_split_across_reads_is_read_whole() {
        use tokio::io::AsyncWriteExt;
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:40000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let v1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 443\r\n".to_vec();
        for header in [v1, v2] {
            let input = [&header[..], b"GET / HTTP/1.1\r\n"].concat();
            for cut in 1..input.len() {
                let (mut peer, ours) = tokio::io::duplex(1 << 12);
                let (first, second) = (input[..cut].to_vec(), input[cut..].to_vec());
                let writer = tokio::spawn(async move {
                    peer.write_all(&first).await.unwrap();
                    tokio::task::yield_now().await;
                    peer.write_all(&second).await.unwrap();
                });
                let (h, mut rest) = read_header(ours).await.unwrap();
                writer.await.unwrap();
                assert_eq!(
                    h,
                    ProxyHeader::Proxied("198.51.100.9:40000".parse().unwrap()),
                    "cut at {cut}"
                );
                let mut out = Vec::new();
                rest.read_to_end(&mut out).await.unwrap();
                assert_eq!(out, b"GET / HTTP/1.1\r\n", "cut at {cut}");
            }
        }
    }

    /// Addresses that do not fit the family the header names are malformed,
    /// never read as another address.
    #[tokio::test]
    async fn addresses_of_the_wrong_family_are_malformed() {
        for bad in [
            &b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP6 10.1.2.3 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 10.1.2.3 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 010.1.2.3 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 1\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 99999 2\r\n",
            b"PROXY TCP5 10.1.2.3 10.0.0.1 1 2\r\n",
            b"PROXY  TCP4 10.1.2.3 10.0.0.1 1 2\r\n",
        ] {
            let got = parse(bad).await;
            assert!(
                matches!(got, Err(ProxyHeaderError::Malformed)),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // v2: family INET6 (0x21) with the 12-byte INET address block.
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x21, 0x00, 0x0c]);
        v2.extend_from_slice(&[10, 1, 2, 3, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
        let got = parse(&v2).await;
        assert!(matches!(got, Err(ProxyHeaderError::Malformed)), "{got:?}");
    }

    #[tokio::test]
    async fn malformed_and_truncated() {
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n").await,
            Err(ProxyHeaderError::Malformed)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4").await,
            Err(ProxyHeaderError::Eof)
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&long).await, Err(ProxyHeaderError::TooLong)));
        let mut bad_v2 = V2_SIGNATURE.to_vec();
        bad_v2.extend_from_slice(&[0x99, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(matches!(
            parse(&bad_v2).await,
            Err(ProxyHeaderError::Malformed)
        ));
    }
}
