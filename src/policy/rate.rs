//! Per-client-IP rate limits on share routes, with a separate, tighter one
//! for the LLM-backed generate-query read. Token buckets from `governor`;
//! the key is the client IP after trusted-proxy resolution, and for IPv6
//! its /64: one host or site is routinely given a whole /64, so keying by
//! the full address would give one client 2^64 budgets.
//!
//! `governor` runs on its std clock (`Instant`, a vDSO read), not on
//! `quanta`: a quanta clock identifies the CPU with `cpuid` when it is made,
//! which a virtual machine traps, and that once cost more than the rest of a
//! request together.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Limits, Rate};

/// How many checks between sweeps of idle client entries, which keeps the
/// table's memory bounded by recently active clients.
const SWEEP_EVERY: u64 = 4096;

pub struct RateLimits {
    share: Option<DefaultKeyedRateLimiter<IpAddr>>,
    generate_query: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("share", &self.share.is_some())
            .field("generate_query", &self.generate_query.is_some())
            .finish()
    }
}

fn limiter(rate: Option<Rate>) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    let rate = rate?;
    let count = NonZeroU32::new(rate.count)?;
    // `count` per `per`, refilled evenly, with a burst of `count`.
    let quota = Quota::with_period(rate.per / rate.count)?.allow_burst(count);
    Some(RateLimiter::keyed(quota))
}

impl RateLimits {
    pub fn new(limits: &Limits) -> RateLimits {
        RateLimits {
            share: limiter(limits.share_rate),
            generate_query: limiter(limits.generate_query_rate),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when `client` is over its limit; `generate_query` selects
    /// the tighter limit (checked in addition to the share limit).
    pub fn check(&self, client: IpAddr, generate_query: bool) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for l in [&self.share, &self.generate_query].into_iter().flatten() {
                l.retain_recent();
            }
        }
        let key = rate_key(client);
        let limiters = [
            generate_query.then_some(&self.generate_query),
            Some(&self.share),
        ];
        for l in limiters.into_iter().flatten().flatten() {
            // The clock is read only on a refusal: every read costs, and the
            // limiter keeps its own clock for the check itself.
            l.check_key(&key)
                .map_err(|not_until| not_until.wait_time_from(l.clock().now()))?;
        }
        Ok(())
    }
}

/// The bucket a client draws from: its IPv4 address (IPv4-mapped IPv6
/// included), or the /64 its IPv6 address is in.
fn rate_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(share: &str) -> Limits {
        let (n, per) = share.split_once('/').unwrap();
        Limits {
            max_connections: 1,
            handshake_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_headers: 10,
            max_public_body_bytes: 1,
            http2_max_concurrent_streams: 1,
            share_rate: Some(Rate {
                count: n.parse().unwrap(),
                per: Duration::from_secs(if per == "h" { 3600 } else { 60 }),
            }),
            generate_query_rate: Some(Rate {
                count: 1,
                per: Duration::from_secs(3600),
            }),
        }
    }

    #[test]
    fn burst_then_refusal_per_client() {
        let r = RateLimits::new(&limits("3/h"));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(r.check(a, false).is_ok());
        }
        let wait = r.check(a, false).unwrap_err();
        assert!(wait > Duration::ZERO);
        // Another client has its own bucket; mapped IPv6 is the same client.
        assert!(r.check(b, false).is_ok());
        assert!(r.check("::ffff:10.0.0.1".parse().unwrap(), false).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let r = RateLimits::new(&limits("2/h"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r.check(ip("2001:db8:1:2::a"), false).is_ok());
        assert!(r
            .check(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), false)
            .is_ok());
        // Another address in the same /64 draws from the same bucket.
        assert!(r.check(ip("2001:db8:1:2::b"), false).is_err());
        // The next /64 is another client.
        assert!(r.check(ip("2001:db8:1:3::a"), false).is_ok());
    }

    #[test]
    fn generate_query_is_tighter() {
        let r = RateLimits::new(&limits("100/h"));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(r.check(a, true).is_ok());
        assert!(r.check(a, true).is_err());
        assert!(r.check(a, false).is_ok());
    }
}
