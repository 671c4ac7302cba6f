//! The frame every callback HCS calls runs in ([`contain`]): no panic leaves it, and the code
//! inside knows it is running on a callback thread ([`in_callback`]).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// How many [`contain`] frames are active on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Resets [`DEPTH`] when the frame ends (also when `f` panics).
struct Depth;

impl Depth {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// `true` while the calling thread is inside a callback HCS called ([`contain`]). Drivers use
/// it to check, in tests, that no callback thread drops what must outlive the callback.
pub fn in_callback() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs the body `f` of an `extern "system"` callback so that it never unwinds into the DLL
/// that called it (a panic leaving an `extern "system"` function aborts the process).
///
/// What is guaranteed: `f`, the error log of a panic it raised (`what` names the callback) and
/// the drop of that panic's payload all run inside `catch_unwind`; if logging or the payload's
/// drop panics in turn, that second payload is leaked (`mem::forget`), never dropped, so nothing
/// can unwind out of this function. What is not: a panic *while panicking* (a `Drop` that panics
/// during unwinding) aborts, as everywhere in Rust.
pub fn contain(what: &'static str, f: impl FnOnce()) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _depth = Depth::enter();
        f();
    }));
    if let Err(payload) = result {
        let second = catch_unwind(AssertUnwindSafe(move || {
            tracing::error!(callback = what, "panic in an HCS callback was contained");
            drop(payload);
        }));
        if let Err(p) = second {
            std::mem::forget(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_swallows_panics_and_marks_the_callback_frame() {
        assert!(!in_callback());
        let mut seen = false;
        contain("test", || seen = in_callback());
        assert!(seen);
        assert!(!in_callback());
        contain("test", || panic!("contained"));
        assert!(!in_callback(), "the frame ends on unwind too");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "leaks the second panic payload on purpose (Miri reports the leak)"
    )]
    fn a_payload_whose_drop_panics_is_contained_too() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("drop of the payload panics");
            }
        }
        contain("test", || std::panic::panic_any(Bomb));
    }
}
