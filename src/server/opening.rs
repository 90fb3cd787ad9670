//! A connection's opening bytes: which HTTP version a cleartext client
//! speaks, under a deadline.
//!
//! A cleartext client picks HTTP/2 by sending its preface first (prior
//! knowledge, h2c); anything else is HTTP/1.1. [`sniff`] reads until the
//! first byte that is not the preface's, or the whole preface, and leaves
//! what it read in the stream for hyper. It reads everything the client has
//! sent so far, not just the preface's 24 bytes: hyper then finds a whole
//! request head in its first read and keeps one 8 KiB read buffer, where a
//! 24-byte first read made it grow that buffer to 16 KiB for the life of
//! the connection (which is what hyper-util's automatic detection did).
//!
//! The caller bounds the wait (`limits.header_timeout`): until these bytes
//! arrive no hyper timer runs, so a client that connects and sends nothing,
//! or part of the preface, would otherwise hold a connection slot for ever.

use std::io;

use tokio::io::AsyncRead;

use super::proxy_protocol::Prefixed;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much is read ahead at most: hyper's first read takes up to its
/// initial 8 KiB buffer, so a larger read ahead would only be split.
const READ_AHEAD: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// The client's HTTP version from its opening bytes, which stay in
/// `stream`. `UnexpectedEof` when it closes before they tell.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut Prefixed<S>) -> io::Result<Version> {
    loop {
        let got = stream.pending();
        let n = got.len().min(H2_PREFACE.len());
        if got[..n] != H2_PREFACE[..n] {
            return Ok(Version::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Version::Http2);
        }
        if stream.read_ahead(READ_AHEAD).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sniffs a peer that writes `chunks` one at a time, then closes; with
    /// everything the stream yields after the sniff.
    async fn version_of(chunks: &[&[u8]]) -> io::Result<(Version, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            for c in chunks {
                peer.write_all(&c).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let mut s = Prefixed::new(Vec::new(), ours);
        let v = sniff(&mut s).await?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await?;
        Ok((v, all))
    }

    #[tokio::test]
    async fn http1_from_its_first_byte_and_every_byte_kept() {
        let (v, kept) = version_of(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"])
            .await
            .unwrap();
        assert_eq!(v, Version::Http1);
        assert_eq!(kept, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // `PR` could still be the preface: a third byte decides.
        let (v, kept) = version_of(&[b"PR", b"OPFIND / HTTP/1.1\r\n"])
            .await
            .unwrap();
        assert_eq!(v, Version::Http1);
        assert_eq!(kept, b"PROPFIND / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn http2_only_with_the_whole_preface() {
        let (v, kept) = version_of(&[&H2_PREFACE[..10], &H2_PREFACE[10..], b"\0\0\0\x04"])
            .await
            .unwrap();
        assert_eq!(v, Version::Http2);
        assert_eq!(kept, [&H2_PREFACE[..], b"\0\0\0\x04"].concat());
        let e = version_of(&[&H2_PREFACE[..23]]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = version_of(&[]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Whatever the opening bytes and however they are split into reads:
    /// the version is the one the whole input names, and every byte stays
    /// in the stream, in order.
    mod chunking {
        use super::*;
        use proptest::prelude::*;

        fn opening() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                // Some of the preface, then anything.
                (0..=24usize, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
                    |(n, rest)| {
                        let mut v = H2_PREFACE[..n].to_vec();
                        v.extend(rest);
                        v
                    }
                ),
                proptest::collection::vec(any::<u8>(), 0..40),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..crate::testing::proptest_config() })]
            #[test]
            fn version_and_bytes_survive_any_split(
                input in opening(),
                cuts in proptest::collection::vec(0..64usize, 0..6),
            ) {
                let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < input.len()).collect();
                cuts.sort_unstable();
                cuts.dedup();
                let mut chunks = Vec::new();
                let mut at = 0;
                for c in cuts.into_iter().chain([input.len()]) {
                    chunks.push(&input[at..c]);
                    at = c;
                }
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let got = rt.block_on(version_of(&chunks));
                let n = input.len().min(H2_PREFACE.len());
                if input[..n] != H2_PREFACE[..n] {
                    let (v, all) = got.unwrap();
                    prop_assert_eq!(v, Version::Http1);
                    prop_assert_eq!(all, input);
                } else if n == H2_PREFACE.len() {
                    let (v, all) = got.unwrap();
                    prop_assert_eq!(v, Version::Http2);
                    prop_assert_eq!(all, input);
                } else {
                    prop_assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
                }
            }
        }
    }
}
