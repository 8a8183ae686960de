//! Micro-benchmarks of the building blocks the peer comparisons rest on:
//! identifier normalizers, the identity graph's union-find, the bitmap
//! operations behind `in_segment`, and packed pages. Run with
//! `cargo bench -p tessera-benches --bench micro` (or `benches/run.sh`,
//! which also writes the figures into BENCHMARKS.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use roaring::RoaringTreemap;
use tessera::internals::{key_of, Graph, NodeId, Rules, TypeRules};
use tessera::internals::Normalizer;
use tessera::internals::{pack_page, unpack_page};

#[path = "../src/rng.rs"]
mod rng;
use rng::Rng;

const VALUES: usize = 10_000;

/// Emails as sources write them: mixed case, stray whitespace.
fn raw_emails() -> Vec<String> {
    let mut rng = Rng(1);
    (0..VALUES)
        .map(|i| {
            let name = format!("Person.{i}");
            match rng.below(4) {
                0 => format!("{name}@example.com"),
                1 => format!("  {}@Example.COM ", name.to_uppercase()),
                2 => format!("{name}+shop@mail.example.org"),
                _ => format!("\t{name}@EXAMPLE.net"),
            }
        })
        .collect()
}

/// US phones in the formats the generator writes.
fn raw_phones() -> Vec<String> {
    let mut rng = Rng(2);
    (0..VALUES)
        .map(|_| {
            let (a, b, c) = (200 + rng.below(700), 200 + rng.below(700), rng.below(10_000));
            match rng.below(4) {
                0 => format!("({a}) {b}-{c:04}"),
                1 => format!("{a}.{b}.{c:04}"),
                2 => format!("+1 {a} {b} {c:04}"),
                _ => format!("{a}{b}{c:04}"),
            }
        })
        .collect()
}

fn normalizers(c: &mut Criterion) {
    let emails = raw_emails();
    let phones = raw_phones();
    let email = Normalizer::parse("email", None, false).expect("email normalizer");
    let phone = Normalizer::parse("phone", Some("US"), false).expect("phone normalizer");
    let text = Normalizer::parse("text", None, true).expect("text normalizer");
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(VALUES as u64));
    group.bench_function("email", |b| b.iter(|| emails.iter().map(|v| email.normalize(black_box(v), &[])).count()));
    group.bench_function("phone", |b| b.iter(|| phones.iter().map(|v| phone.normalize(black_box(v), &[])).count()));
    group.bench_function("text_fold_case", |b| b.iter(|| emails.iter().map(|v| text.normalize(black_box(v), &[])).count()));
    group.bench_function("key_of", |b| b.iter(|| emails.iter().map(|v| key_of(1, black_box(v))[0]).fold(0u64, |a, k| a ^ k)));
    group.finish();
}

const PEOPLE: u64 = 50_000;
const ROWS: usize = 200_000;

fn rules() -> Rules {
    let open = TypeRules { max_per_profile: 1_000, priority: 1, generic_limit: 1_000 };
    Rules { types: vec![Some(open.clone()), Some(open.clone()), Some(open)], max_identifiers: 10_000 }
}

/// Rows of three identifiers (email, phone, cookie) over `PEOPLE` people;
/// each person owns two emails, one phone and a few cookies, so rows of
/// one person arrive unlinked and merge as the stream goes on.
fn rows() -> Vec<[(u16, String); 3]> {
    let mut rng = Rng(3);
    (0..ROWS)
        .map(|_| {
            let p = rng.below(PEOPLE);
            [
                (0, format!("p{p}.{}@example.com", rng.below(2))),
                (1, format!("+1650{p:07}")),
                (2, format!("cookie-{p}-{}", rng.below(4))),
            ]
        })
        .collect()
}

fn link_all(rows: &[[(u16, String); 3]], rules: &Rules) -> Graph {
    let mut graph = Graph::new();
    let mut events = Vec::new();
    let mut row: Vec<(u8, NodeId)> = Vec::with_capacity(3);
    for r in rows {
        row.clear();
        for (slot, (t, v)) in r.iter().enumerate() {
            let node = graph.intern(*t, key_of(*t, v)).expect("node limit");
            row.push((slot as u8, node));
        }
        graph.link(&row, 0, rules, &mut events);
        events.clear();
    }
    graph
}

fn union_find(c: &mut Criterion) {
    let rows = rows();
    let rules = rules();
    let mut group = c.benchmark_group("union_find");
    group.sample_size(10);
    group.throughput(Throughput::Elements((ROWS * 3) as u64));
    group.bench_function("intern_and_link_200k_rows", |b| b.iter(|| link_all(black_box(&rows), &rules).node_count()));
    let graph = link_all(&rows, &rules);
    let nodes = graph.node_count() as NodeId;
    let mut rng = Rng(4);
    let probes: Vec<NodeId> = (0..100_000).map(|_| rng.below(u64::from(nodes)) as NodeId).collect();
    group.throughput(Throughput::Elements(probes.len() as u64));
    group.bench_function("profile_of_gather_100k", |b| {
        b.iter(|| probes.iter().filter_map(|n| graph.profile_of(black_box(*n))).fold(0u64, |a, p| a ^ p))
    });
    group.finish();
}

/// Profile ids as the graph hands them out: dense from 1, with gaps
/// where profiles merged away.
fn live_profiles(n: u64) -> RoaringTreemap {
    let mut rng = Rng(5);
    (1..=n + n / 10).filter(|_| rng.below(11) != 0).collect()
}

fn sample(of: &RoaringTreemap, one_in: u64, seed: u64) -> RoaringTreemap {
    let mut rng = Rng(seed);
    of.iter().filter(|_| rng.below(one_in) == 0).collect()
}

fn bitmaps(c: &mut Criterion) {
    let live = live_profiles(2_000_000);
    let high_value = sample(&live, 20, 6);
    let engaged = sample(&live, 4, 7);
    let mut group = c.benchmark_group("segment_bitmaps");
    group.throughput(Throughput::Elements(live.len()));
    group.bench_function("in_segment_and_live_2m", |b| b.iter(|| (black_box(&live) & black_box(&engaged)).len()));
    group.bench_function("and_not_two_segments", |b| {
        b.iter(|| ((black_box(&engaged) - black_box(&high_value)) & black_box(&live)).len())
    });
    group.bench_function("intersection_len_only", |b| b.iter(|| black_box(&live).intersection_len(black_box(&engaged))));
    let ids: Vec<u64> = engaged.iter().collect();
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("build_from_sorted_500k", |b| {
        b.iter_batched(|| ids.clone(), |ids| RoaringTreemap::from_sorted_iter(ids).map(|m| m.len()), BatchSize::LargeInput)
    });
    group.finish();
}

/// Rows of a page, as segments write them.
const PAGE_ROWS: usize = 8192;

/// Pages of the shapes a load writes: node ids (a frame of reference),
/// a session's cookie node over a few rows (runs), a sparse identifier's
/// node column (mostly NULL), event times in whole seconds in order
/// (deltas with a factor), and dictionary keys of repeated strings.
fn page_shapes() -> Vec<(&'static str, arrow::array::ArrayRef)> {
    use arrow::array::{TimestampNanosecondArray, UInt16Array, UInt64Array};
    use std::sync::Arc;
    let scattered = |i: u64| i.wrapping_mul(2_654_435_761) % 1_000_003;
    let rows = 0..PAGE_ROWS as u64;
    vec![
        ("nodes", Arc::new(UInt64Array::from_iter_values(rows.clone().map(|i| 4_000_000 + scattered(i))))),
        ("sessions", Arc::new(UInt64Array::from_iter_values(rows.clone().map(|i| 9_000_000 + scattered(i / 4))))),
        ("sparse", Arc::new(rows.clone().map(|i| (i % 9 == 0).then(|| scattered(i))).collect::<UInt64Array>())),
        (
            "times",
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.clone().map(|i| 1_730_421_364_000_000_000 + (i as i64 * 50 + (i as i64 * 7919) % 40) * 1_000_000_000),
            )),
        ),
        ("keys", Arc::new(UInt16Array::from_iter_values(rows.map(|i| (scattered(i / 3) % 2000) as u16)))),
    ]
}

fn packed_pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("packed_pages");
    group.throughput(Throughput::Elements(PAGE_ROWS as u64));
    for (name, page) in page_shapes() {
        group.bench_function(format!("pack_{name}"), |b| b.iter(|| pack_page(black_box(&page)).map(|bytes| bytes.len())));
        let Some(bytes) = pack_page(&page) else { continue };
        group.bench_function(format!("unpack_{name}"), |b| {
            b.iter(|| unpack_page(black_box(&bytes), PAGE_ROWS as u64, page.data_type()).map(|column| column.len()))
        });
    }
    group.finish();
}

criterion_group!(micro, normalizers, union_find, bitmaps, packed_pages);
criterion_main!(micro);
