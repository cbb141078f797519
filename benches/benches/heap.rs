//! The relay's counting allocator (`wzp_relay::observe::heap`): one
//! allocation and its free through it, beside the same pair on `System`
//! alone. The difference is what `wzp_relay_heap_bytes` costs per
//! allocation (docs/PERFORMANCE.md, "Memory per connection").

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wzp_relay::observe::heap::CountingAlloc;

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a valid non-zero layout; the block is freed at once with the
    // same layout by the same allocator.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        if !p.is_null() {
            a.dealloc(p, layout);
        }
    }
}

fn heap(c: &mut Criterion) {
    let mut group = c.benchmark_group("heap");
    group.throughput(Throughput::Elements(1));
    for size in [64usize, 1500] {
        let layout = Layout::from_size_align(size, 8).expect("a valid layout");
        group.bench_function(format!("raw/System alloc+free {size} B"), |b| {
            b.iter(|| pair(&System, black_box(layout)))
        });
        group.bench_function(format!("counting alloc+free {size} B"), |b| {
            b.iter(|| pair(&CountingAlloc, black_box(layout)))
        });
    }
    group.finish();
}

criterion_group!(benches, heap);
criterion_main!(benches);
