//! Throughput of the streaming body rewriter on a 64 MiB JSON body, with a
//! public URL about every 4 KiB and with none, pushed in 16 KiB and 64 KiB
//! chunks (zero-copy slices of one buffer, as hyper hands them over).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sharegate::rewrite::{Origin, RewriteOptions, Rules, StreamRewriter};

const SIZE: usize = 64 << 20;

/// JSON records of about 1 KiB; every fourth one carries a public share URL
/// when `with_urls`. Other hosts' URLs and plenty of `h`s keep the search honest.
fn json_body(with_urls: bool) -> Bytes {
    let mut out = String::with_capacity(SIZE + 4096);
    out.push('[');
    let mut i = 0u64;
    while out.len() < SIZE {
        let url = if with_urls && i % 4 == 0 {
            format!("https://smith.langchain.com/public/{i:08x}-5c1e-4a0b-9f00-0123456789ab/r")
        } else {
            "https://api.openai.com/v1/chat/completions".to_owned()
        };
        out.push_str(&format!(
            "{{\"id\":\"{i:08x}-5c1e-4a0b-9f00-0123456789ab\",\"name\":\"ChatOpenAI\",\"run_type\":\"llm\",\
             \"url\":\"{url}\",\"inputs\":{{\"messages\":[{{\"role\":\"user\",\"content\":\"Which hotels \
             have the highest ratings in the heart of the city? Think through the hints, then \
             check the web, http headers and the hash of each page.\"}}]}},\"outputs\":{{\"text\":\"The \
             three highest rated hotels are the Harbor House, the High Street Hotel and the \
             Hillside Hostel; each has more than a thousand reviews with an average above \
             4.7.\"}},\"extra\":{{\"metadata\":{{\"ls_provider\":\"openai\",\"ls_model_name\":\"gpt-4o\",\
             \"thread_id\":\"th-{i}\"}}}},\"start_time\":\"2026-01-01T00:00:00Z\"}},"
        ));
        i += 1;
    }
    out.push(']');
    Bytes::from(out)
}

fn bench(c: &mut Criterion) {
    let rules = Arc::new(
        Rules::new(
            vec![Origin::parse("https://smith.langchain.com").unwrap()],
            Origin::parse("https://smith.internal.example").unwrap(),
            RewriteOptions::default(),
        )
        .unwrap(),
    );
    let mut group = c.benchmark_group("rewrite_64MiB");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for (name, with_urls) in [("no_match", false), ("url_every_4KiB", true)] {
        let body = json_body(with_urls);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for chunk in [16 << 10, 64 << 10] {
            let chunks: Vec<Bytes> = (0..body.len())
                .step_by(chunk)
                .map(|at| body.slice(at..(at + chunk).min(body.len())))
                .collect();
            group.bench_function(format!("{name}/{}KiB", chunk >> 10), |b| {
                b.iter(|| {
                    let mut r = StreamRewriter::new(Arc::clone(&rules));
                    let mut out = Vec::with_capacity(16);
                    let mut total = 0;
                    for c in &chunks {
                        r.push(c.clone(), &mut out);
                        total += out.iter().map(Bytes::len).sum::<usize>();
                        out.clear();
                    }
                    r.finish(&mut out);
                    total += out.iter().map(Bytes::len).sum::<usize>();
                    black_box((total, r.matches()))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
