//! Criterion benchmarks for layer 1 and the policy core.
//!
//! Method: each group reports time per call (and elements/s where a call moves more than one
//! event). Sinks behind queues count into an atomic so the consumer costs as little as possible:
//! what is measured is the toolkit, not the work. Run with
//! `cargo bench --bench core`; results and the machine are recorded in docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookwire::http::{Secret, Signer, encode_envelope};
use hookwire::policy::{
    Attempt, Backoff, Breaker, BreakerConfig, Classifier, Outcome, RetryPolicy, SplitMix64,
    parse_retry_after,
};
use hookwire::sink::{Broadcaster, Overflow, Queue, from_fn};
use hookwire::{RawEvent, Sink};

// Under `RUSTFLAGS="--cfg hookwire_bench_mimalloc"` only (see Cargo.toml): the same code with
// mimalloc as the allocator of the events the producer creates and the drainers free.
#[cfg(hookwire_bench_mimalloc)]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A 1,100-byte docker-distribution style event, like the peers' benchmarks use.
fn raw_event(i: usize) -> RawEvent {
    let pad = "x".repeat(900);
    RawEvent::parse(format!(
        r#"{{"id":"evt-{i:08}","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"bench/app","pad":"{pad}"}}}}"#
    ))
    .unwrap()
}

fn counting_queue(count: Arc<AtomicU64>, capacity: usize) -> Queue<Arc<[u8]>> {
    let sink = from_fn(move |_e: Arc<[u8]>| {
        count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    Queue::new(sink, capacity, Overflow::Block { timeout: None }).unwrap()
}

fn queue_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_push");
    g.throughput(Throughput::Elements(1));
    let count = Arc::new(AtomicU64::new(0));
    let q = counting_queue(count.clone(), 1 << 16);
    let ev: Arc<[u8]> = Arc::from(vec![0u8; 1100]);
    g.bench_function("block_1_consumer", |b| {
        b.iter(|| q.write(black_box(ev.clone())).unwrap())
    });
    g.finish();
    q.close().unwrap();
}

/// The peers' `fanout_N*` scenario: Broadcaster -> N Queues -> counting sinks, one producer,
/// timed from the first write until `close` returned (every queue flushed). Criterion's
/// elements/s is deliveries/s (events x N), the peer's `deliveries_per_s`.
fn broadcast_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20);
    const EVENTS: usize = 50_000;
    for n in [1usize, 4, 16] {
        g.throughput(Throughput::Elements((EVENTS * n) as u64));
        g.bench_with_input(BenchmarkId::new("deliveries", n), &n, |bench, &n| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A counter per sink, as the peer's `countSink`s (one shared by all
                    // sinks would make the drainers take its line from each other per event).
                    let counts: Vec<Arc<AtomicU64>> =
                        (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
                    let sinks: Vec<Arc<dyn Sink<Arc<[u8]>>>> = counts
                        .iter()
                        .map(|count| {
                            let q = counting_queue(count.clone(), EVENTS);
                            Arc::new(q) as Arc<dyn Sink<Arc<[u8]>>>
                        })
                        .collect();
                    let b = Broadcaster::new(sinks);
                    let start = Instant::now();
                    for i in 0..EVENTS {
                        // A distinct 24-byte event each time, as the peer allocates one.
                        let mut ev = [0u8; 24];
                        ev[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        b.write(Arc::from(&ev[..])).unwrap();
                    }
                    b.close().unwrap();
                    total += start.elapsed();
                    for c in &counts {
                        assert_eq!(c.load(Ordering::Relaxed), EVENTS as u64);
                    }
                }
                total
            })
        });
    }
    // The same with N=4, beside a fifth queue whose downstream hangs until the iteration is
    // over: what a hanging neighbour costs healthy queues (the pool's watchdog replaces the
    // drainer it holds; issue 13).
    let n = 4usize;
    g.throughput(Throughput::Elements((EVENTS * n) as u64));
    g.bench_function(BenchmarkId::new("beside_hanging", n), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let counts: Vec<Arc<AtomicU64>> =
                    (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
                let healthy: Vec<Arc<Queue<Arc<[u8]>>>> = counts
                    .iter()
                    .map(|count| Arc::new(counting_queue(count.clone(), EVENTS)))
                    .collect();
                let (release, hang) = crossbeam_channel::bounded::<()>(0);
                let hanging = Arc::new(
                    Queue::new(
                        from_fn(move |_e: Arc<[u8]>| {
                            let _ = hang.recv();
                            Ok(())
                        }),
                        16,
                        Overflow::DropNewest,
                    )
                    .unwrap(),
                );
                let mut sinks: Vec<Arc<dyn Sink<Arc<[u8]>>>> = healthy
                    .iter()
                    .map(|q| q.clone() as Arc<dyn Sink<Arc<[u8]>>>)
                    .collect();
                sinks.push(hanging.clone());
                let b = Broadcaster::new(sinks.clone());
                let start = Instant::now();
                for i in 0..EVENTS {
                    let mut ev = [0u8; 24];
                    ev[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    b.write(Arc::from(&ev[..])).unwrap();
                }
                for q in &healthy {
                    q.close().unwrap();
                }
                total += start.elapsed();
                for c in &counts {
                    assert_eq!(c.load(Ordering::Relaxed), EVENTS as u64);
                }
                drop(release);
                let _ = hanging.close();
            }
            total
        })
    });
    g.finish();
}

fn policy_decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    let t0 = Instant::now();
    let mut breaker = Breaker::new(BreakerConfig::default()).unwrap();
    let mut i = 0u64;
    g.bench_function("breaker_check_and_record", |b| {
        b.iter(|| {
            i += 1;
            let now = t0 + Duration::from_micros(i);
            let p = breaker.check(now);
            if i.is_multiple_of(7) {
                breaker.on_failure(now);
            } else {
                breaker.on_success(now);
            }
            black_box(p)
        })
    });
    let policy = RetryPolicy::new(Backoff::exponential(
        Duration::from_millis(100),
        Duration::from_secs(60),
    ));
    let mut rng = SplitMix64::new(7);
    let attempt = Attempt {
        number: 5,
        first_at: t0,
    };
    let outcome = Outcome::Retry {
        retry_after: None,
        throttled: false,
    };
    g.bench_function("retry_decide", |b| {
        b.iter(|| black_box(policy.decide(&attempt, &outcome, t0, &mut rng)))
    });
    let classifier = Classifier::default();
    g.bench_function("classify_status", |b| {
        b.iter(|| black_box(classifier.classify_status(black_box(503), None)))
    });
    let now = SystemTime::now();
    g.bench_function("parse_retry_after_date", |b| {
        b.iter(|| {
            black_box(parse_retry_after(
                black_box("Sun, 06 Nov 1994 08:49:37 GMT"),
                now,
            ))
        })
    });
    g.finish();
}

fn envelope_and_signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    let events: Vec<RawEvent> = (0..100).map(raw_event).collect();
    let mut buf = Vec::with_capacity(256 * 1024);
    for n in [1usize, 100] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode_envelope", n), &n, |b, &n| {
            b.iter(|| {
                buf.clear();
                encode_envelope(black_box(&events[..n]), &mut buf).unwrap();
                black_box(buf.len())
            })
        });
    }
    buf.clear();
    encode_envelope(&events[..1], &mut buf).unwrap();
    let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
    let signer = Signer::new(vec![secret]).unwrap();
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("sign_1_event", |b| {
        b.iter(|| black_box(signer.sign("evt-00000001", 1_614_265_330, black_box(&buf))))
    });
    g.finish();
}

criterion_group!(
    benches,
    queue_push,
    broadcast_fanout,
    policy_decisions,
    envelope_and_signing
);
criterion_main!(benches);
