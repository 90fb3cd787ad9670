//! `server::proxy_protocol::read_header` on arbitrary connection bytes.
//!
//! Asserts: no panic; when a header is found (Proxied or Local), the bytes
//! left in the returned stream are exactly the input after the header, whose
//! length is computed here from the wire format (v2: 16 + the length field;
//! v1: up to and including the first CRLF); when none is found, the returned
//! stream replays the whole input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sharegate::server::proxy_protocol::{read_header, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::runtime::{Builder, Runtime};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Builder::new_current_thread().build().expect("runtime"))
}

fn header_len(data: &[u8]) -> Option<usize> {
    if data.starts_with(V2_SIGNATURE) && data.len() >= 16 {
        return Some(16 + usize::from(u16::from_be_bytes([data[14], data[15]])));
    }
    if data.starts_with(b"PROXY ") {
        return data.windows(2).position(|w| w == b"\r\n").map(|p| p + 2);
    }
    None
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let Ok((header, mut stream)) = read_header(data).await else {
            return;
        };
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("in-memory read");
        match header {
            ProxyHeader::Absent => assert_eq!(rest, data, "Absent must replay every byte"),
            ProxyHeader::Proxied(_) | ProxyHeader::Local => {
                let len = header_len(data).expect("a header was accepted without a signature");
                assert_eq!(
                    rest.len() + len,
                    data.len(),
                    "header of {len} bytes, {} bytes left of {}",
                    rest.len(),
                    data.len()
                );
                assert_eq!(rest, &data[len..]);
            }
        }
    });
});
