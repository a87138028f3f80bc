//! loom models of the ring: every interleaving (up to a preemption bound) of small
//! producer/consumer scenarios, with loom checking the memory orderings and every
//! access to the slot bytes for data races.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib ring_loom
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` overrides the default bound of 4 preemptions per execution.
//!
//! Consumers never spin here: they pop a bounded number of times while producers run,
//! then join them and drain, expecting no record left pending. A producer that waited
//! for a slot (instead of dropping) would make loom report a deadlock or run past its
//! branch limit.

use loom::sync::Arc;
use loom::thread;

use crate::ring::{ClaimError, Consumer, CrashNext, Pop, Ring, MIN_SLOTS, SLOT_BYTES};

/// Frame bytes in front of every record (private to the ring).
const FRAME: usize = 8;

/// Runs `f` under loom with the preemption bound, and says how many executions loom
/// explored (at least two, or the model has no concurrency worth the name). The span
/// table's models use it too.
pub(crate) fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let explored = executions.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{name}: {explored} executions explored (preemption bound {:?})",
        builder.preemption_bound
    );
    assert!(explored > 1, "{name}: loom explored a single execution");
}

fn push(ring: &Ring, bytes: &[u8]) -> Result<(), ClaimError> {
    let mut claim = ring.try_claim(bytes.len())?;
    claim.write(bytes);
    claim.publish();
    Ok(())
}

/// A payload that fills exactly `slots` slots, every byte `fill`.
fn filling(slots: usize, fill: u8) -> Vec<u8> {
    vec![fill; slots * SLOT_BYTES - FRAME]
}

/// Pops once; the record if there was one.
fn pop_once(consumer: &mut Consumer<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match consumer.pop_into(&mut out) {
        Pop::Record => Some(out),
        Pop::Empty | Pop::Pending | Pop::Damaged => None,
    }
}

/// Pops once, lets the other threads run, pops again. The yield steers loom's first
/// execution so that the consumer's accesses come after the producers' ones: loom's
/// DPOR compares a pending access only with the object's last access, so a consumer
/// that ran first would never be moved after a producer whose own earlier load of the
/// same word hides the conflict (a model with no yield explored a single execution).
fn pop_around_a_yield(consumer: &mut Consumer<'_>, seen: &mut Vec<Vec<u8>>) {
    seen.extend(pop_once(consumer));
    thread::yield_now();
    seen.extend(pop_once(consumer));
}

/// Pops until empty, once every producer has returned: nothing may be left pending.
fn drain(consumer: &mut Consumer<'_>, seen: &mut Vec<Vec<u8>>) {
    loop {
        let mut out = Vec::new();
        match consumer.pop_into(&mut out) {
            Pop::Record => seen.push(out),
            Pop::Empty => return,
            Pop::Pending => panic!("a record is pending after every producer returned"),
            Pop::Damaged => panic!("no frame is ever corrupt here"),
        }
    }
}

/// Two producers race for `tail` while the consumer reads: both records arrive once,
/// intact, and the consumer never reads a slot a producer is still writing.
#[test]
fn two_producers_and_the_consumer() {
    model("two_producers_and_the_consumer", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        let producers: Vec<_> = (1..=2u8)
            .map(|id| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || push(&ring, &[id; 20]))
            })
            .collect();
        let mut consumer = ring.take_consumer().expect("the consumer");
        let mut seen = Vec::new();
        pop_around_a_yield(&mut consumer, &mut seen);
        for producer in producers {
            // Two producers on an empty 16-slot ring: a lost race means the other won,
            // so neither can run out of attempts or room.
            assert_eq!(producer.join().unwrap(), Ok(()));
        }
        drain(&mut consumer, &mut seen);
        seen.sort();
        assert_eq!(seen, vec![vec![1u8; 20], vec![2u8; 20]]);
    });
}

/// A producer holds a claim while a nested push runs on the same thread (a signal
/// handler between claim and publish), and another producer pushes too. The consumer
/// waits (`Pending`) at the held claim and then reads everything in position order.
#[test]
fn nested_push_inside_a_claim_window() {
    model("nested_push_inside_a_claim_window", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        let interrupted = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut outer = ring.try_claim(10).expect("room for the outer record");
                outer.write(&[b'o'; 5]);
                // The handler: a whole push while the outer claim is open.
                push(&ring, &[b'n'; 10]).expect("room for the nested record");
                outer.write(&[b'o'; 5]);
                outer.publish();
            })
        };
        let other = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || push(&ring, &[b'x'; 10]).expect("room"))
        };
        let mut consumer = ring.take_consumer().expect("the consumer");
        let mut seen = Vec::new();
        pop_around_a_yield(&mut consumer, &mut seen);
        interrupted.join().unwrap();
        other.join().unwrap();
        drain(&mut consumer, &mut seen);
        assert_eq!(seen.len(), 3, "{seen:?}");
        let at = |fill: u8| seen.iter().position(|r| r == &vec![fill; 10]).unwrap();
        // The outer record was claimed first, so it is read first, whatever the order
        // of publication.
        assert!(at(b'o') < at(b'n'));
    });
}

/// A record of three slots, written a slot at a time, is read whole by a consumer that
/// may look at it at any point of the writing; another producer pushes a two-slot
/// record meanwhile.
#[test]
fn multi_slot_records() {
    model("multi_slot_records", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        let big: Vec<u8> = (0..3 * SLOT_BYTES - FRAME).map(|i| i as u8).collect();
        let producer = {
            let ring = Arc::clone(&ring);
            let big = big.clone();
            thread::spawn(move || push(&ring, &big))
        };
        let other = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || push(&ring, &filling(2, 7)))
        };
        let mut consumer = ring.take_consumer().expect("the consumer");
        let mut seen = Vec::new();
        pop_around_a_yield(&mut consumer, &mut seen);
        assert_eq!(producer.join().unwrap(), Ok(()));
        assert_eq!(other.join().unwrap(), Ok(()));
        drain(&mut consumer, &mut seen);
        seen.sort();
        let mut expected = vec![big, filling(2, 7)];
        expected.sort();
        assert_eq!(seen, expected);
    });
}

/// The ring is full; the consumer frees the oldest record while a producer claims for
/// the next lap. A claim succeeds only once the consumer is done with every slot it
/// covers (loom checks there is no race on the bytes), and is otherwise refused at
/// once as `Full`, in particular when its first slots are free but its last one still
/// holds an unread record.
#[test]
fn wrap_while_the_consumer_frees() {
    // Both first executions: loom's DPOR does not find every reordering from either.
    for consumer_first in [true, false] {
        model("wrap_while_the_consumer_frees", move || {
            let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
            let mut consumer = ring.take_consumer().expect("the consumer");
            // Move head and tail to position 2, then fill the ring: A at 2..6, B at 6..14,
            // C at 14..18 (indices 14, 15, 0, 1: across the end of the array).
            push(&ring, &filling(2, 0)).unwrap();
            assert_eq!(pop_once(&mut consumer), Some(filling(2, 0)));
            push(&ring, &filling(4, 1)).unwrap();
            push(&ring, &filling(8, 2)).unwrap();
            push(&ring, &filling(4, 3)).unwrap();
            assert_eq!(push(&ring, b"no room"), Err(ClaimError::Full));

            let producer = {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    // D at 18..26 covers A's slots (indices 2..6) and B's first four
                    // (6..10): B is not read in this model, so D never fits.
                    let d = push(&ring, &filling(8, 4));
                    // E at 18..22 covers exactly A's slots: it fits once A is freed.
                    let e = push(&ring, &filling(4, 5));
                    (d, e)
                })
            };
            if !consumer_first {
                thread::yield_now();
            }
            assert_eq!(pop_once(&mut consumer), Some(filling(4, 1)));
            let (d, e) = producer.join().unwrap();
            assert_eq!(d, Err(ClaimError::Full));
            assert!(matches!(e, Ok(()) | Err(ClaimError::Full)), "{e:?}");
            let mut seen = Vec::new();
            drain(&mut consumer, &mut seen);
            let mut expected = vec![filling(8, 2), filling(4, 3)];
            if e.is_ok() {
                expected.push(filling(4, 5));
            }
            assert_eq!(seen, expected);
        });
    }
}

/// A producer holds an unpublished claim while its own thread pushes more than the ring
/// holds, and the consumer reads concurrently. The consumer cannot pass the held claim,
/// so exactly the free slots are taken and every further push is refused as `Full`
/// without waiting (a waiting push would never return: only this thread can publish).
#[test]
fn wrap_onto_an_unpublished_claim_drops() {
    model("wrap_onto_an_unpublished_claim_drops", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        let holder = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut held = ring.try_claim(1).expect("room");
                held.write(b"h");
                let mut refused = 0;
                for _ in 0..MIN_SLOTS {
                    match push(&ring, b"p") {
                        Ok(()) => {}
                        Err(ClaimError::Full) => refused += 1,
                        Err(other) => panic!("{other:?}"),
                    }
                }
                held.publish();
                refused
            })
        };
        let mut consumer = ring.take_consumer().expect("the consumer");
        let mut seen = Vec::new();
        // The held claim is at position 0: nothing can be read before it is published,
        // and it is published only after the pushes.
        pop_around_a_yield(&mut consumer, &mut seen);
        let refused = holder.join().unwrap();
        // 15 free slots, 16 pushes: exactly one refused, whenever the consumer looked.
        assert_eq!(refused, 1);
        drain(&mut consumer, &mut seen);
        assert_eq!(seen.len(), MIN_SLOTS);
        assert_eq!(seen[0], b"h");
        assert!(seen[1..].iter().all(|r| r == b"p"));
    });
}

/// With a severity reserve, a claim must leave `reserve` slots free: it checks the slot
/// `reserve` past its own last one. Racing the consumer that frees them, a reserved
/// claim either succeeds after the consumer is done with every slot up to that one,
/// or is refused.
#[test]
fn reserved_claim_racing_the_consumer() {
    // Both first executions: loom's DPOR does not find every reordering from either.
    for consumer_first in [true, false] {
        model("reserved_claim_racing_the_consumer", move || {
            let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
            let mut consumer = ring.take_consumer().expect("the consumer");
            push(&ring, &filling(8, 1)).unwrap();
            push(&ring, &filling(6, 2)).unwrap();
            // 2 slots free (14, 15). A 2-slot record leaving 2 free needs slot 17 (index
            // 1) free: only after A (0..8) is read.
            let producer = {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let payload = filling(2, 3);
                    let result = ring.try_claim_leaving(payload.len(), 2).map(|mut claim| {
                        claim.write(&payload);
                        claim.publish();
                    });
                    result
                })
            };
            if !consumer_first {
                thread::yield_now();
            }
            assert_eq!(pop_once(&mut consumer), Some(filling(8, 1)));
            let pushed = producer.join().unwrap();
            assert!(
                matches!(pushed, Ok(()) | Err(ClaimError::Full)),
                "{pushed:?}"
            );
            let mut seen = Vec::new();
            drain(&mut consumer, &mut seen);
            let mut expected = vec![filling(6, 2)];
            if pushed.is_ok() {
                expected.push(filling(2, 3));
            }
            assert_eq!(seen, expected);
        });
    }
}

/// The stop: the ring is closed while two producers push. Every push either succeeds
/// and is read before the consumer finds the ring empty, or is refused as `Closed`;
/// once a closed ring reads empty, nothing can arrive later (the record the stop used
/// to lose without counting it).
#[test]
fn close_racing_producers_loses_nothing() {
    model("close_racing_producers_loses_nothing", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        let producers: Vec<_> = (1..=2u8)
            .map(|id| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || push(&ring, &[id; 20]).map(|()| id))
            })
            .collect();
        ring.close();
        let mut consumer = ring.take_consumer().expect("the consumer");
        let mut seen = Vec::new();
        loop {
            let mut out = Vec::new();
            match consumer.pop_into(&mut out) {
                Pop::Record => seen.push(out),
                // A producer that claimed before the close is still writing.
                Pop::Pending => thread::yield_now(),
                Pop::Empty => break,
                Pop::Damaged => panic!("no frame is corrupt here"),
            }
        }
        let mut accepted: Vec<Vec<u8>> = Vec::new();
        for producer in producers {
            match producer.join().unwrap() {
                Ok(id) => accepted.push(vec![id; 20]),
                Err(refused) => assert_eq!(refused, ClaimError::Closed),
            }
        }
        seen.sort();
        assert_eq!(seen, accepted);
        assert_eq!(push(&ring, b"late"), Err(ClaimError::Closed));
    });
}

/// What a crash drain does with the ring, as `crash::drain` does it: claim (or wait for
/// the drain that holds the claim to give it back, then claim), wait for the listener to
/// let go, read up to the tail seen at the start, give the ring back. Returns what it
/// read.
fn crash_drain(ring: &Ring) -> Vec<Vec<u8>> {
    while !ring.crash_claim() {
        thread::yield_now();
    }
    while ring.consumer_active() {
        thread::yield_now();
    }
    let mut drain = ring
        .crash_drain()
        .expect("claimed, and the listener let go");
    let mut seen = Vec::new();
    loop {
        match drain.next() {
            CrashNext::Record(record) => {
                let mut bytes = Vec::new();
                drain.read(&record, 0, usize::MAX, |piece| {
                    bytes.extend_from_slice(piece)
                });
                drain.free(&record);
                seen.push(bytes);
            }
            CrashNext::Empty => break,
            CrashNext::Pending => thread::yield_now(),
        }
    }
    ring.crash_release();
    seen
}

/// A crash drain racing the listener and a producer that keeps logging: the drain
/// waits for the listener's batch, reads no further than the tail it saw (the producer's
/// record may or may not be in it), and gives the ring back; the listener then resumes
/// after what the drain read. Every record is read exactly once, each reader reads in
/// order, and never both at once (loom checks the slot bytes).
#[test]
fn crash_drain_and_release_racing_the_listener() {
    model("crash_drain_and_release_racing_the_listener", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        push(&ring, &[1; 10]).unwrap();
        push(&ring, &[2; 10]).unwrap();
        let crash = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || crash_drain(&ring))
        };
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || push(&ring, &[3; 10]))
        };
        let mut consumer = ring.take_consumer().expect("the consumer");
        // One batch of one record (refused if the drain claimed the ring first), then
        // the token goes back (written and synced).
        let first = pop_once(&mut consumer);
        consumer.release();
        let drained = crash.join().unwrap();
        assert_eq!(producer.join().unwrap(), Ok(()));
        let mut later = Vec::new();
        drain(&mut consumer, &mut later);
        // Each reader reads in position order; between them, every record once.
        let listener: Vec<Vec<u8>> = first.into_iter().chain(later).collect();
        for reader in [&listener, &drained] {
            assert!(
                reader.windows(2).all(|w| w[0] < w[1]),
                "{listener:?} {drained:?}"
            );
        }
        let mut all: Vec<Vec<u8>> = listener.iter().chain(&drained).cloned().collect();
        all.sort();
        assert_eq!(
            all,
            vec![vec![1; 10], vec![2; 10], vec![3; 10]],
            "listener {listener:?}, drain {drained:?}"
        );
    });
}

/// Two threads crash at once: one drains, the other waits for the ring to be given back
/// and then drains what is left; never both at once (loom checks the slot bytes), and
/// every record is read once.
#[test]
fn two_crash_drains_take_turns() {
    model("two_crash_drains_take_turns", || {
        let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
        push(&ring, &[1; 10]).unwrap();
        let other = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let late = push(&ring, &[2; 10]);
                (late, crash_drain(&ring))
            })
        };
        let mine = crash_drain(&ring);
        let (late, theirs) = other.join().unwrap();
        assert_eq!(late, Ok(()));
        let mut all = mine.clone();
        all.extend(theirs.iter().cloned());
        all.sort();
        assert_eq!(all, vec![vec![1; 10], vec![2; 10]], "{mine:?} {theirs:?}");
        // Given back: nothing is left claimed.
        assert!(!ring.crash_claimed());
        assert!(ring.take_consumer().expect("the consumer").hold());
    });
}

/// A stop gives up on a listener that is taking records: once the listener is no longer
/// taking (it went off to write), the stop counts what is left in the ring. Every
/// record is either taken by the listener or counted by the stop, exactly once, and
/// the listener takes nothing after the stop forbade it.
#[test]
fn an_abandoning_stop_and_the_listener_never_both_take_a_record() {
    model(
        "an_abandoning_stop_and_the_listener_never_both_take_a_record",
        || {
            let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
            for fill in 1..=3u8 {
                push(&ring, &[fill; 10]).unwrap();
            }
            ring.close();
            let listener = {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut consumer = ring.take_consumer().expect("the consumer");
                    let mut taken = 0u64;
                    for _ in 0..2 {
                        let mut out = Vec::new();
                        if consumer.pop_into(&mut out) == Pop::Record {
                            taken += 1;
                        }
                        // Off to write the batch: the ring is free meanwhile.
                        consumer.begin_write();
                        consumer.end_write();
                    }
                    taken
                })
            };
            ring.abandon();
            while ring.consumer_taking() {
                thread::yield_now();
            }
            let (counted, interrupted) = ring.count_unread(|_| true);
            let taken = listener.join().unwrap();
            assert_eq!(interrupted, 0);
            assert_eq!(taken + counted, 3, "taken {taken}, counted {counted}");
        },
    );
}
