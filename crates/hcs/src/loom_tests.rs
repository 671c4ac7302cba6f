//! `loom` models of the two concurrent cores: the notification registry (register / dispatch /
//! unregister racing) and the per-object notification state (the exit latch: set once, every
//! waiter wakes, none misses the wake-up; armed completions vs disarm; notifications held while a
//! close unregisters, dropped or replayed in order).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p hcs --lib --release loom`.

use crate::hresult::HResult;
use crate::notifier::{Arrival, Follow, Notifier, Outcome};
use crate::notify::{NotificationKind, Registry, Sink};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Counting(Arc<AtomicUsize>);

/// loom's `Arc` has no unsized coercion; go through std's.
fn sink(count: &Arc<AtomicUsize>) -> Arc<dyn Sink> {
    Arc::from_std(std::sync::Arc::new(Counting(count.clone())) as std::sync::Arc<dyn Sink>)
}

impl Sink for Counting {
    fn notify(&self, _kind: NotificationKind, _status: HResult, _payload: Option<&str>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn registry_dispatch_racing_unregister_delivers_at_most_once_and_never_after_removal() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let count = Arc::new(AtomicUsize::new(0));
        let ctx = reg.insert(sink(&count));
        let r2 = reg.clone();
        let dispatcher =
            thread::spawn(move || r2.deliver(ctx.raw(), NotificationKind::SystemExited, HResult(0), None));
        assert!(reg.remove(ctx));
        let after_removal = reg.deliver(ctx.raw(), NotificationKind::SystemExited, HResult(0), None);
        let delivered = dispatcher.join().unwrap();
        assert!(!after_removal, "a removed id must be a no-op");
        assert_eq!(count.load(Ordering::SeqCst), usize::from(delivered));
        assert_eq!(reg.len(), 0);
    });
}

#[test]
fn registry_ids_are_unique_across_concurrent_registrations() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let r2 = reg.clone();
        let t = thread::spawn(move || r2.insert(sink(&Arc::new(AtomicUsize::new(0)))));
        let a = reg.insert(sink(&Arc::new(AtomicUsize::new(0))));
        let b = t.join().unwrap();
        assert_ne!(a, b);
        assert!(a.raw() >= 1 && b.raw() >= 1, "ids are 1-based");
        assert_eq!(reg.len(), 2);
        assert!(reg.remove(a) && reg.remove(b));
        assert!(!reg.remove(a), "double removal reports absence");
    });
}

fn fire_exit(n: &Notifier, status: u32) {
    exit_arrives(n, HResult(status), Arrival::Live);
}

fn exit_arrives(n: &Notifier, status: HResult, arrival: Arrival) {
    n.on_notification(
        NotificationKind::SystemExited,
        NotificationKind::SystemExited,
        status,
        None,
        arrival,
        &|sig| Some(Outcome::SystemExit(sig.clone())),
    );
}

#[test]
fn exit_latch_is_set_once_and_every_waiter_wakes() {
    loom::model(|| {
        let n = Arc::new(Notifier::new());
        let n1 = n.clone();
        let waiter = thread::spawn(move || match n1.wait_outcome(None) {
            Some(o) => match &*o {
                Outcome::SystemExit(sig) => sig.status,
                other => panic!("unexpected outcome {other:?}"),
            },
            other => panic!("unexpected outcome {other:?}"),
        });
        let n2 = n.clone();
        let firer = thread::spawn(move || fire_exit(&n2, 0));
        fire_exit(&n, HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT.0); // a duplicate racing the first
        firer.join().unwrap();
        let latched = n.exit_signal().unwrap().status;
        assert_eq!(
            waiter.join().unwrap(),
            latched,
            "the blocked waiter sees the one latched exit"
        );
        match n.wait_outcome(None).as_deref() {
            Some(Outcome::SystemExit(sig)) => assert_eq!(sig.status, latched, "a late waiter sees it too"),
            other => panic!("unexpected outcome {other:?}"),
        }
    });
}

#[test]
fn close_outcome_races_exit_and_both_waiters_agree() {
    loom::model(|| {
        let n = Arc::new(Notifier::new());
        let n1 = n.clone();
        let waiter = thread::spawn(move || n1.wait_outcome(None).map(|o| matches!(*o, Outcome::Closed)));
        let n2 = n.clone();
        let closer = thread::spawn(move || n2.publish(Outcome::Closed));
        fire_exit(&n, 0);
        let closed_won = closer.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Some(closed_won));
    });
}

#[test]
fn completion_goes_to_the_armed_operation_or_is_dropped_after_disarm() {
    loom::model(|| {
        let n = Arc::new(Notifier::new());
        let seq = n.arm(NotificationKind::SystemStartCompleted);
        let n2 = n.clone();
        let hcs = thread::spawn(move || {
            n2.on_notification(
                NotificationKind::SystemExited,
                NotificationKind::SystemStartCompleted,
                HResult(0),
                None,
                Arrival::Live,
                &|_| None,
            )
        });
        n.disarm(seq);
        assert_eq!(hcs.join().unwrap(), Follow::Nothing);
        // whatever the interleaving, a later operation of the same kind never inherits it (I3)
        let next = n.arm(NotificationKind::SystemStartCompleted);
        assert!(n.completion_of(next).is_none());
        n.disarm(next);
    });
}

#[test]
fn notifications_racing_a_successful_unregister_are_never_published() {
    loom::model(|| {
        let n = Arc::new(Notifier::new());
        n.hold();
        let n2 = n.clone();
        let hcs = thread::spawn(move || fire_exit(&n2, 0));
        n.mute();
        hcs.join().unwrap();
        assert!(n.exit_signal().is_none(), "held then dropped, or muted");
    });
}

#[test]
fn notifications_held_during_a_failed_unregister_are_replayed_in_order() {
    loom::model(|| {
        let n = Arc::new(Notifier::new());
        n.hold();
        let n2 = n.clone();
        let hcs = thread::spawn(move || {
            fire_exit(&n2, 0);
            fire_exit(&n2, HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT.0);
        });
        // The closer's replay loop (object::Registration::replay_held), racing the arrivals.
        loop {
            let batch = n.next_held();
            if batch.is_empty() {
                break;
            }
            for (_, status, _) in batch {
                exit_arrives(&n, status, Arrival::Replayed);
            }
        }
        hcs.join().unwrap();
        assert_eq!(
            n.exit_signal().map(|s| s.status),
            Some(HResult(0)),
            "the first exit HCS sent is the one latched, whether held or not"
        );
    });
}
