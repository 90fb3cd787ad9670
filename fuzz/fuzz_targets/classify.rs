//! `RouteTable::classify` on arbitrary request targets, LangSmith profile, at
//! the root and under a base path.
//!
//! Asserts: no panic; an accepted target classifies the same when its
//! canonical form is classified again (idempotence); and a target accepted
//! as `Other` does not reach a route once its path is fully percent-decoded,
//! `\` is read as `/` and dot segments are resolved (that would be a bypass:
//! the gateway waves it through as "the rest of the app" while a lax
//! upstream serves a share route).
//!
//! Input layout: byte 0 picks the method (bits 0..3) and the table (bit 3);
//! the rest, read as UTF-8 (lossily), is the request target.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use sharegate::route::{Profile, RouteClass, RouteTable};

const BASE_PATH: &str = "/langsmith";
const METHODS: [Method; 8] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
];

fn tables() -> &'static [RouteTable; 2] {
    static TABLES: OnceLock<[RouteTable; 2]> = OnceLock::new();
    TABLES.get_or_init(|| {
        [
            RouteTable::new(Profile::LangSmith, "", &[]).expect("root table"),
            RouteTable::new(Profile::LangSmith, BASE_PATH, &[]).expect("base-path table"),
        ]
    })
}

/// Percent-decodes until nothing changes (bounded: the classifier refuses
/// deeper nesting), reads `\` as `/`, then resolves dot segments the way
/// RFC 3986 §5.2.4 does.
fn decode_fully(path: &str) -> String {
    let mut cur = path.as_bytes().to_vec();
    for _ in 0..16 {
        let next: Vec<u8> = percent_encoding::percent_decode(&cur).collect();
        if next == cur {
            break;
        }
        cur = next;
    }
    let text: String = String::from_utf8_lossy(&cur).replace('\\', "/");
    remove_dot_segments(&text)
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate().skip(1) {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(sel & 7)];
    let table = &tables()[usize::from((sel >> 3) & 1)];
    let target = String::from_utf8_lossy(rest);

    let Ok(route) = table.classify(method, &target) else {
        return;
    };

    let again_target = match &route.query {
        Some(q) => format!("{}?{}", route.path, q),
        None => route.path.clone(),
    };
    match table.classify(method, &again_target) {
        Ok(again) => assert_eq!(
            again, route,
            "not idempotent: {target:?} -> {again_target:?}"
        ),
        Err(e) => panic!("canonical form refused: {target:?} -> {again_target:?}: {e}"),
    }

    if route.class == RouteClass::Other {
        let decoded = decode_fully(&route.path);
        if let Ok(loose) = table.classify(method, &decoded) {
            assert!(
                loose.class == RouteClass::Other,
                "bypass: {target:?} is Other, its decoded form {decoded:?} is {:?}",
                loose.class
            );
        }
    }
});
