//! Criterion benchmark of the engine's multicast ring, in the shape of DESIGN.md's table
//! "Measured: what fan-out costs": one producer thread publishes 1,100-byte `Arc<[u8]>` events
//! (one pre-made payload, cloned per publish) into one ring; N consumers, split over 1 or 2
//! consumer threads, read each event in place and only count it. Elements/s is deliveries/s
//! (events x N). Run with `cargo bench --bench ring`.
//!
//! The ring is crate-internal, so this bench compiles its source file directly (`#[path]`); the
//! `use hookwire::Error` below is what that file calls `crate::Error`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
#[allow(unused_imports)]
use hookwire::Error;

// What the engine uses and this bench does not (and, in clippy's test build, the file's tests).
#[allow(dead_code, unused_imports)]
#[path = "../src/engine/ring.rs"]
mod ring;

use ring::{Consumer, Ring};

/// Events published per measured run.
const EVENTS: u64 = 100_000;
/// Ring slots: a few thousand events of slack between the producer and the slowest consumer.
const CAPACITY: usize = 4096;
/// Entries a consumer reads before it releases them and turns to its next consumer.
const BATCH: u64 = 256;

/// One consumer thread: reads, counts and releases until each of its consumers has seen every
/// event addressed to it.
fn consume(mut group: Vec<Consumer<Arc<[u8]>>>, start: Arc<Barrier>) -> u64 {
    start.wait();
    let mut counts = vec![0u64; group.len()];
    let mut done = 0;
    while done < group.len() {
        let mut progressed = false;
        for (c, count) in group.iter_mut().zip(counts.iter_mut()) {
            if *count == EVENTS {
                continue;
            }
            let bit = 1u64 << c.index();
            let first = c.position();
            let mut pos = first;
            while pos - first < BATCH {
                let Some(e) = c.get(pos) else { break };
                if e.mask & bit != 0 {
                    black_box(e.value.len());
                    *count += 1;
                }
                pos += 1;
            }
            if pos > first {
                c.advance(pos);
                progressed = true;
                if *count == EVENTS {
                    done += 1;
                }
            }
        }
        if !progressed {
            thread::yield_now();
        }
    }
    counts.iter().sum()
}

/// One run: `EVENTS` events to `n` consumers over `workers` threads; the time from the start
/// until every consumer has read every event.
fn run(n: usize, workers: usize, payload: &Arc<[u8]>) -> Duration {
    let ring = Arc::new(Ring::<Arc<[u8]>>::new(CAPACITY));
    let mut groups: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    for i in 0..n {
        groups[i % workers].push(Ring::register(&ring, i).expect("a free index"));
    }
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let start = Arc::new(Barrier::new(workers + 2));
    let readers: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let start = start.clone();
            thread::spawn(move || consume(group, start))
        })
        .collect();
    let producer = {
        let (ring, start, payload) = (ring.clone(), start.clone(), payload.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..EVENTS {
                let mut value = payload.clone();
                let mut spins = 0u32;
                while let Err(full) = ring.try_publish(value, mask) {
                    value = full.value;
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        thread::yield_now();
                    }
                }
            }
        })
    };
    start.wait();
    let began = Instant::now();
    producer.join().expect("producer");
    let delivered: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    let elapsed = began.elapsed();
    assert_eq!(delivered, EVENTS * n as u64);
    elapsed
}

fn ring_fanout(c: &mut Criterion) {
    let payload: Arc<[u8]> = Arc::from(vec![b'x'; 1100]);
    let mut g = c.benchmark_group("ring_fanout");
    g.sample_size(10);
    for (n, workers) in [(1usize, 1usize), (4, 2), (16, 1), (16, 2)] {
        let suffix = if workers == 1 { "worker" } else { "workers" };
        g.throughput(Throughput::Elements(EVENTS * n as u64));
        g.bench_function(format!("N{n}_{workers}{suffix}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(n, workers, &payload)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, ring_fanout);
criterion_main!(benches);
