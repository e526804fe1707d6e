//! One message through the shared-memory ring (encode into the slot, publish,
//! pop, decode), in one thread so the figure is the ring's own cost.
//!
//! Baseline in the same run: the same `Event` through a bounded
//! `std::sync::mpsc::sync_channel`, the in-process queue we would use if the
//! two sides shared an address space. The cross-process rate is measured by
//! the two-process unit test in `gateway-ring` (see docs/PERFORMANCE.md).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gateway_ring::msg::{DropReason, Event, SessionStats};
use gateway_ring::{Region, SessionId};

fn stats(i: u64) -> Event {
    Event::Stats(SessionStats {
        session: SessionId::new(i),
        packets: i * 3,
        bytes: i * 3600,
        drops: [0; DropReason::COUNT],
        ..SessionStats::default()
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_stats_event");
    g.throughput(Throughput::Elements(1));

    g.bench_function("baseline_std_sync_channel", |b| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(4096);
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            tx.send(stats(i)).expect("receiver alive");
            black_box(rx.recv().expect("just sent"));
        })
    });

    let path = std::env::temp_dir().join(format!("mgw-bench-ring-{}", std::process::id()));
    let region = Region::create(&path, 1).expect("create a ring file in the temp dir");
    g.bench_function("shm_spsc_push_pop", |b| {
        let mut tx = region.event_producer(0);
        let mut rx = region.event_consumer(0);
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            tx.push(&stats(i)).expect("ring drained every iteration");
            black_box(rx.pop::<Event>());
        })
    });
    g.finish();
    let _ = std::fs::remove_file(path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
