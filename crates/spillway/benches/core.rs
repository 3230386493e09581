//! Criterion benchmarks of the core primitives' hot paths.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(_c: &mut Criterion) {}

criterion_group!(core, benches);
criterion_main!(core);
