//! loom models of the span table ([`crate::spans`]): every interleaving (up to a
//! preemption bound) of small create / clone / release / lookup scenarios, with loom
//! exploring every value each atomic load may read under the memory orderings used.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib spans_loom
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` overrides the default bound of 4 preemptions per execution.
//!
//! The table holds no `UnsafeCell`: its data words are atomics, so loom finds no data
//! race to report. What the models check instead is what a wrong ordering or a missing
//! ABA tag would break: a slot handed out twice, a free list that lost or repeated a
//! slot, a stale id that reads the next span's data or keeps a closed span open.

use std::num::NonZeroU64;

use loom::sync::Arc;
use loom::thread;

use crate::ring_loom::model;
use crate::spans::{index_of, Release, SpanTable};

/// Every slot handed out is free again, on the free list exactly once.
fn assert_all_free(table: &SpanTable) {
    let mut free = table.free_indices();
    free.sort_unstable();
    let all: Vec<u32> = (0..table.bumped()).collect();
    assert_eq!(free, all, "the free list lost or repeated a slot");
}

/// Two threads create and release spans at once, on a free list of three slots: one
/// thread pops one slot while the other pops two and pushes one back, so a pop can
/// find the head it read (slot 0) back at the head with another link below it (the
/// ABA case the tag is for), and pops race pushes for the same head. Every span is
/// its creator's alone while live (its data stays), every release of the only
/// reference closes, nothing grows (every create found a free slot), and at the end
/// the three slots are on the free list once each.
#[test]
fn creates_and_releases_race_on_the_free_list() {
    model("creates_and_releases_race_on_the_free_list", || {
        let table = Arc::new(SpanTable::with_capacity(4));
        // Three slots, closed in the order 2, 1, 0: the free list is 0 -> 1 -> 2.
        let first: Vec<NonZeroU64> = (0..3).map(|d| table.create(d).unwrap()).collect();
        for id in first.iter().rev() {
            assert_eq!(table.release(*id), Release::Closed);
        }
        let other = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                let x = table.create(10).expect("a free slot");
                assert_eq!(table.data(x), Some(10));
                assert_eq!(table.release(x), Release::Closed);
                x
            })
        };
        let a = table.create(20).expect("a free slot");
        let b = table.create(21).expect("a free slot");
        assert_ne!(index_of(a), index_of(b));
        assert_eq!(table.data(a), Some(20));
        assert_eq!(table.release(a), Release::Closed);
        assert_eq!(table.data(b), Some(21));
        assert_eq!(table.release(b), Release::Closed);
        let x = other.join().unwrap();
        for id in [x, a, b].iter().chain(&first) {
            assert_eq!(table.data(*id), None);
        }
        assert_eq!(table.bumped(), 3, "a create found no free slot");
        assert_all_free(&table);
    });
}

/// The last release of a span races `clone_ref` (and a lookup) from another handle;
/// the closing thread creates the slot's next span at once.
///
/// * `holds_a_ref` (tracing's contract: a clone is made from a live handle): the
///   clone succeeds and the lookup sees the data, whatever the owner does meanwhile;
///   of the three releases exactly one closes, the last.
/// * Without (a stale handle, the defensive case): the clone either comes first and
///   keeps the span open (then its release closes it) or fails, never reviving a
///   closed span; the lookup sees the span's data or nothing, never the next span's.
#[test]
fn release_racing_clone_ref() {
    for holds_a_ref in [true, false] {
        model("release_racing_clone_ref", move || {
            let table = Arc::new(SpanTable::with_capacity(1));
            let id = table.create(1).unwrap();
            if holds_a_ref {
                assert!(table.clone_ref(id));
            }
            let owner = {
                let table = Arc::clone(&table);
                thread::spawn(move || {
                    let released = table.release(id);
                    let next = (released == Release::Closed)
                        .then(|| table.create(2).expect("the freed slot"));
                    (released, next)
                })
            };
            let seen = table.data(id);
            let cloned = table.clone_ref(id);
            let mut mine = Vec::new();
            if cloned {
                mine.push(table.release(id));
            }
            if holds_a_ref {
                mine.push(table.release(id));
            }
            let (released, next) = owner.join().unwrap();
            if holds_a_ref {
                assert!(cloned, "a clone from a live handle failed");
                assert_eq!(seen, Some(1));
            } else {
                assert!(matches!(seen, None | Some(1)), "{seen:?}");
            }
            // Exactly one release closed the span, and nothing after it released.
            let all: Vec<Release> = std::iter::once(released).chain(mine.clone()).collect();
            assert_eq!(
                all.iter().filter(|r| **r == Release::Closed).count(),
                1,
                "owner {released:?}, other {mine:?}"
            );
            assert!(all.iter().all(|r| *r != Release::Unknown), "{all:?}");
            if let Some(last) = mine.last() {
                if released == Release::Closed {
                    assert!(mine.iter().all(|r| *r == Release::StillOpen));
                } else {
                    assert_eq!(*last, Release::Closed);
                }
            }
            // The id is dead; the slot's next span (if the owner closed) is another id.
            assert_eq!(table.data(id), None);
            assert!(!table.clone_ref(id));
            if let Some(next) = next {
                assert_ne!(next, id);
                assert_eq!(index_of(next), index_of(id));
                assert_eq!(table.data(next), Some(2));
                assert_eq!(table.release(next), Release::Closed);
            }
            assert_eq!(table.bumped(), 1);
            assert_all_free(&table);
        });
    }
}
