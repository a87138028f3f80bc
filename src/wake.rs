//! Waking the listener: an eventfd it sleeps on, written only when it said it sleeps;
//! and the other way round, waking a Block-mode caller when the listener made room
//! ([`Room`]).
//!
//! Producers pay one load per record while the listener is awake. A producer that
//! finds the `sleeping` flag set swaps it off and writes the eventfd once; both are
//! async-signal-safe.
//!
//! No wake-up is lost, without a fence on the producer side: the producer's claim is
//! a SeqCst CAS on the ring's `tail` followed (after publishing) by a SeqCst load of
//! `sleeping`; the listener stores `sleeping = true` (SeqCst) and then loads `tail`
//! (SeqCst) before it sleeps. In the single total order of SeqCst operations, either
//! the listener's load comes after the claim (it sees work and does not sleep) or the
//! producer's load comes after the store (it sees the flag and wakes it). On x86 this
//! costs nothing: the CAS is a locked instruction whatever its ordering, and SeqCst
//! loads are plain loads. The sleep still has a timeout, as a second line of defence.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
        })
    }

    /// Producer side: wake the listener if it announced it sleeps. Async-signal-safe.
    #[inline]
    pub(crate) fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.signal();
        }
    }

    /// Wake the listener whatever it is doing (control messages). Async-signal-safe.
    pub(crate) fn wake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
        self.signal();
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our own eventfd. A failure
        // (EAGAIN when the counter is saturated) means a wake-up is pending anyway.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Listener side: announce sleep. The caller must look for work again after this
    /// and before [`Waker::sleep`], so a producer that published before seeing the
    /// flag is not missed.
    pub(crate) fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Listener side: the work check after `prepare_sleep` found something.
    pub(crate) fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Listener side: sleep until woken or `timeout` passes, then reset the eventfd.
    pub(crate) fn sleep(&self, timeout: Duration) {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pollfd, 1, millis) };
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live local; nonblocking, EAGAIN when not signalled.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::from_mut(&mut counter).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Where a Block-mode caller waits for the listener to free slots
/// ([`crate::Overflow::Block`]): a futex on a sequence word, `freed`, that the listener
/// bumps after freeing slots while someone sleeps on it.
///
/// No wake-up is lost. A caller [`Room::enter`]s (counts itself in `sleepers`, SeqCst
/// fence, reads its ticket from `freed`), tries its claim once more, and only then
/// sleeps while `freed` still equals the ticket. The listener frees slots, and before
/// it does anything long (write, sync, sleep) it calls [`Room::notify_fenced_if`] or
/// [`Room::notify_fenced`]: SeqCst fence, then reads `sleepers`. By the two fences,
/// either the listener sees the sleeper (and bumps `freed` after its frees, now or
/// once the ring is roomy, so the futex does not sleep or is woken) or the caller's
/// retry sees the freed slots. The futex compares and sleeps
/// atomically in the kernel, so a bump between the ticket and the sleep is not missed.
///
/// The listener wakes sleepers in bulk, once a good share of the ring is free
/// ([`Room::notify_if`]), not for every few slots it frees: each wake-up costs it a
/// `futex(FUTEX_WAKE)` and each caller a context switch, and callers woken for a slot
/// or two fill it, sleep again, and on a machine with few cores take turns with the
/// listener for the CPU it needs to drain. Woken in bulk, they fill the room in one
/// go while the listener keeps its core, and most calls never wait at all. Before the
/// listener stops draining (sync, sleep, exit) it wakes them whatever the room
/// ([`Room::notify_fenced`]), so nobody sleeps while room sits unused for long.
///
/// Costs the listener one load per check while nobody sleeps. `futex(2)` is async-signal-safe (a plain syscall), so a signal handler
/// may wait here too.
///
/// Before sleeping, one caller at a time may spin for room a moment
/// ([`Room::start_spin`]), and only while nobody sleeps: the listener frees a slot
/// every few hundred nanoseconds while it runs, but more callers spinning beside it
/// than there are spare cores take the CPU it needs to free them.
#[derive(Debug, Default)]
pub(crate) struct Room {
    freed: AtomicU32,
    sleepers: AtomicU32,
    spinning: AtomicBool,
}

impl Room {
    /// Caller side: announces a sleep and returns the ticket to pass to
    /// [`Room::wait`]. Try to claim again after this, then wait, then
    /// [`Room::leave`].
    pub(crate) fn enter(&self) -> u32 {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.freed.load(Ordering::Acquire)
    }

    /// Caller side: sleeps until the listener frees slots after the ticket was taken,
    /// or `timeout` passes (or a signal interrupts the sleep).
    pub(crate) fn wait(&self, ticket: u32, timeout: Duration) {
        #[cfg(not(loom))]
        {
            let timeout = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: FUTEX_WAIT on a live, aligned u32 of ours with a valid timeout;
            // the kernel only reads both. Any result (woken, EAGAIN: already bumped,
            // ETIMEDOUT, EINTR) sends the caller back to its claim.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.freed.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    ticket,
                    std::ptr::from_ref(&timeout),
                )
            };
        }
        #[cfg(loom)]
        {
            // The models check the ticket protocol itself (`Room::ticket_taken`); the
            // kernel's compare-and-sleep is not modelled.
            let _ = (ticket, timeout);
            loom::thread::yield_now();
        }
    }

    /// Caller side: whether this caller may spin for room, as the only one, while
    /// nobody sleeps for it. If so, [`Room::end_spin`] when done spinning.
    pub(crate) fn start_spin(&self) -> bool {
        self.sleepers.load(Ordering::Relaxed) == 0 && !self.spinning.swap(true, Ordering::Acquire)
    }

    /// Caller side: the spinner is done (claimed, or about to sleep or give up).
    pub(crate) fn end_spin(&self) {
        self.spinning.store(false, Ordering::Release);
    }

    /// Caller side: done waiting (whatever the outcome).
    pub(crate) fn leave(&self) {
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Listener side, between records: wakes the sleepers, if any, once `roomy()` says
    /// enough slots are free to be worth a wake-up; no fence. One load while nobody
    /// sleeps. A sleeper it misses or leaves asleep is woken by a later notify: the
    /// listener keeps draining, so the ring gets roomy, and whenever it stops draining
    /// it calls [`Room::notify_fenced`].
    #[inline]
    pub(crate) fn notify_if(&self, roomy: impl FnOnce() -> bool) {
        if self.sleepers.load(Ordering::Relaxed) != 0 && roomy() {
            self.wake_all();
        }
    }

    /// Listener side, after freeing slots and before a write while more records wait:
    /// like [`Room::notify_if`], after the fence that pairs with [`Room::enter`]'s.
    pub(crate) fn notify_fenced_if(&self, roomy: impl FnOnce() -> bool) {
        fence(Ordering::SeqCst);
        self.notify_if(roomy);
    }

    /// Listener side, after freeing slots and before it stops draining for a while
    /// (sync, sleep, exit): wakes every sleeper that could have missed the frees,
    /// whatever the room.
    pub(crate) fn notify_fenced(&self) {
        self.notify_fenced_if(|| true);
    }

    /// Wakes everyone, sleeping or about to (the listener stops: nobody will free
    /// slots any more, and they must not sleep out their timeout).
    pub(crate) fn wake_all(&self) {
        self.freed.fetch_add(1, Ordering::Release);
        #[cfg(not(loom))]
        // SAFETY: FUTEX_WAKE on a live, aligned u32 of ours; no other argument is read.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.freed.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
    }

    /// Whether a sleep on `ticket` would still sleep now (the models' check).
    #[cfg(all(test, loom))]
    pub(crate) fn ticket_taken(&self, ticket: u32) -> bool {
        self.freed.load(Ordering::Acquire) == ticket
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn sleep_times_out_without_a_wake() {
        let waker = Waker::new().unwrap();
        waker.prepare_sleep();
        let start = Instant::now();
        waker.sleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn wake_if_sleeping_cuts_the_sleep_short() {
        let waker = std::sync::Arc::new(Waker::new().unwrap());
        waker.prepare_sleep();
        let producer = std::sync::Arc::clone(&waker);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            producer.wake_if_sleeping();
        });
        let start = Instant::now();
        waker.sleep(Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(20));
        t.join().unwrap();
    }

    #[test]
    fn the_listener_freeing_room_ends_a_block_callers_sleep() {
        let room = std::sync::Arc::new(Room::default());
        let ticket = room.enter();
        let listener = std::sync::Arc::clone(&room);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            listener.notify_fenced();
        });
        let start = Instant::now();
        room.wait(ticket, Duration::from_secs(30));
        room.leave();
        assert!(start.elapsed() < Duration::from_secs(20));
        t.join().unwrap();
        // Nobody sleeps now: a notify is one load, and bumps nothing.
        let ticket = room.enter();
        room.leave();
        room.notify_fenced();
        assert_eq!(room.freed.load(Ordering::Relaxed), ticket);
    }

    #[test]
    fn sleepers_are_woken_only_once_the_ring_is_roomy() {
        let room = Room::default();
        let ticket = room.enter();
        room.notify_fenced_if(|| false); // draining, not roomy yet: let it sleep
        assert_eq!(room.freed.load(Ordering::Relaxed), ticket);
        room.notify_if(|| true);
        assert_ne!(room.freed.load(Ordering::Relaxed), ticket);
        room.leave();
        // Nobody sleeps: the room is not even looked at.
        room.notify_if(|| unreachable!("looked at the room with nobody asleep"));
    }

    #[test]
    fn one_caller_spins_for_room_at_a_time_and_none_while_others_sleep() {
        let room = Room::default();
        assert!(room.start_spin());
        assert!(!room.start_spin(), "a second spinner");
        room.end_spin();
        let _ticket = room.enter();
        assert!(!room.start_spin(), "spinning while a caller sleeps");
        room.leave();
        assert!(room.start_spin());
        room.end_spin();
    }

    #[test]
    fn a_sleep_on_a_stale_ticket_returns_at_once() {
        let room = Room::default();
        let ticket = room.enter();
        room.wake_all(); // the listener freed room between the ticket and the sleep
        let start = Instant::now();
        room.wait(ticket, Duration::from_secs(30));
        room.leave();
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn awake_listener_is_not_signalled() {
        let waker = Waker::new().unwrap();
        waker.wake_if_sleeping(); // not sleeping: no write
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from our nonblocking eventfd.
        let n = unsafe {
            libc::read(
                waker.fd.as_raw_fd(),
                std::ptr::from_mut(&mut counter).cast(),
                8,
            )
        };
        assert_eq!(n, -1, "eventfd must be empty");
    }
}

/// loom model of [`Room`]: a Block-mode caller that decides to sleep is always woken.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib room_loom`.
#[cfg(all(test, loom))]
mod room_loom {
    use loom::sync::Arc;
    use loom::thread;

    use super::Room;
    use crate::ring::{Pop, Ring, MIN_SLOTS, SLOT_BYTES};

    /// A payload that fills half of the smallest ring (the frame takes 8 bytes).
    const HALF: usize = MIN_SLOTS / 2 * SLOT_BYTES - 8;

    /// The ring is full; a caller tries to claim, announces its sleep, tries again and
    /// would sleep on its ticket; the listener meanwhile frees a record and notifies.
    /// In every interleaving, either the caller's second try finds the room or its
    /// ticket is stale by the time the listener is done (the futex would not sleep,
    /// or the wake that follows the bump ends the sleep).
    #[test]
    fn a_sleeper_for_room_is_never_missed() {
        crate::ring_loom::model("a_sleeper_for_room_is_never_missed", || {
            let ring = Arc::new(Ring::with_slots(MIN_SLOTS));
            let room = Arc::new(Room::default());
            for fill in [1u8, 2] {
                let mut claim = ring.try_claim(HALF).expect("room to fill the ring");
                claim.write(&[fill; HALF]);
                claim.publish();
            }
            let caller = {
                let (ring, room) = (Arc::clone(&ring), Arc::clone(&room));
                thread::spawn(move || {
                    if ring.try_claim(HALF).is_ok() {
                        return None;
                    }
                    let ticket = room.enter();
                    match ring.try_claim(HALF) {
                        Ok(claim) => {
                            claim.publish();
                            room.leave();
                            None
                        }
                        // Asleep on the futex: it leaves only once woken, after the
                        // listener below is done.
                        Err(reason) => Some((ticket, reason)),
                    }
                })
            };
            let mut consumer = ring.take_consumer().expect("the consumer");
            let mut out = Vec::new();
            assert_eq!(consumer.pop_into(&mut out), Pop::Record);
            room.notify_fenced();
            if let Some((ticket, reason)) = caller.join().unwrap() {
                assert!(
                    !room.ticket_taken(ticket),
                    "the caller sleeps on ticket {ticket} ({reason:?}) nobody will bump: a lost wake-up"
                );
            }
        });
    }
}
