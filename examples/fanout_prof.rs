//! Profiling harness for layer 1's fan-out (issue 13): Broadcaster -> N Queues -> counting
//! sinks, the `fanout` bench's loop without criterion. `cargo run --release --example
//! fanout_prof -- N ITERS` prints the median, least and most deliveries/s over ITERS
//! iterations (each rate too with `EACH=1`); N = 0 times the `queue_push` loop instead (ITERS
//! million writes). Meant for `perf record -g` and `perf stat -e context-switches`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hookwire::Sink;
use hookwire::sink::{Broadcaster, Overflow, Queue, from_fn};

// Under `RUSTFLAGS="--cfg hookwire_bench_mimalloc"` only (see Cargo.toml): the same code with
// mimalloc as the allocator of the events the producer creates and the drainers free.
#[cfg(hookwire_bench_mimalloc)]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 50_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    if n == 0 {
        // The `queue_push` bench: one queue, one writer, the same event each time.
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let sink = from_fn(move |_e: Arc<[u8]>| {
            c.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let q = Queue::new(sink, 1 << 16, Overflow::Block { timeout: None }).unwrap();
        let ev: Arc<[u8]> = Arc::from(vec![0u8; 1100]);
        let writes = iters * 1_000_000;
        let start = Instant::now();
        for _ in 0..writes {
            q.write(std::hint::black_box(ev.clone())).unwrap();
        }
        let el = start.elapsed();
        q.close().unwrap();
        println!(
            "queue_push: {:.1} ns/write",
            el.as_nanos() as f64 / writes as f64
        );
        return;
    }
    let mut rates = Vec::new();
    for _ in 0..iters {
        // A counter per sink, as the peer's `countSink`s.
        let counts: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let sinks: Vec<Arc<dyn Sink<Arc<[u8]>>>> = counts
            .iter()
            .map(|count| {
                let c = count.clone();
                let sink = from_fn(move |_e: Arc<[u8]>| {
                    c.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                });
                let q = Queue::new(sink, EVENTS, Overflow::Block { timeout: None }).unwrap();
                Arc::new(q) as Arc<dyn Sink<Arc<[u8]>>>
            })
            .collect();
        let b = Broadcaster::new(sinks);
        let start = Instant::now();
        for i in 0..EVENTS {
            let mut ev = [0u8; 24];
            ev[..8].copy_from_slice(&(i as u64).to_le_bytes());
            b.write(Arc::from(&ev[..])).unwrap();
        }
        b.close().unwrap();
        let el = start.elapsed();
        for c in &counts {
            assert_eq!(c.load(Ordering::Relaxed), EVENTS as u64);
        }
        rates.push((EVENTS * n) as f64 / el.as_secs_f64() / 1e6);
        if std::env::var_os("EACH").is_some() {
            eprint!("{:.1} ", rates[rates.len() - 1]);
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "N={n} deliveries/s (M): median {:.2} min {:.2} max {:.2}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
