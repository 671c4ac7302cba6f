//! Building blocks of the fake tables the drivers' tests fill with Rust `extern "system"`
//! functions (`tests/fake_table.rs` of both driver crates).

use crate::{StdioMapper, PWSTR};
use hcs::notify::Subscription;
use hcs::{HResult, NotificationKind, PipeReader, PipeWriter};
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::io;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

/// The bookkeeping every fake table keeps: the result strings it handed to the driver (each
/// must be freed exactly once with [`Core::free`]), the handles it issued, the calls it saw and
/// the stdio handles its process calls return.
#[derive(Debug, Default)]
pub struct Core {
    /// Live allocations handed to the driver: address → units (incl. NUL).
    pub live: HashMap<usize, usize>,
    /// Strings allocated so far.
    pub allocated: usize,
    /// Strings freed so far.
    pub freed: usize,
    /// Frees of pointers the fake never returned (or returned and already saw freed).
    pub bad_frees: usize,
    /// The last handle value issued.
    pub next_handle: usize,
    /// Open system handles.
    pub systems: HashSet<usize>,
    /// Open process handles.
    pub processes: HashSet<usize>,
    /// Calls seen, by name.
    pub calls: HashMap<&'static str, usize>,
    /// Stdio handles returned by the process calls (stdin, stdout, stderr).
    pub stdio: [usize; 3],
    /// Hand out closed system/process handle values again (as HCS may): a closed value goes
    /// to [`Core::recycled`] and the next system or process opened gets it back.
    pub reuse_handles: bool,
    /// Closed handle values waiting to be reused (most recent last).
    pub recycled: Vec<usize>,
}

impl Core {
    /// Fresh bookkeeping whose handles start after `first_handle`.
    pub fn new(first_handle: usize) -> Self {
        Core {
            next_handle: first_handle,
            ..Core::default()
        }
    }

    /// Allocates a NUL-terminated copy of `units` that only [`Core::free`] may free.
    pub fn alloc(&mut self, units: &[u16]) -> PWSTR {
        let mut v = units.to_vec();
        v.push(0);
        let b: Box<[u16]> = v.into_boxed_slice();
        let len = b.len();
        let p = Box::into_raw(b) as *mut u16;
        self.live.insert(p as usize, len);
        self.allocated += 1;
        p
    }

    /// [`Core::alloc`] of the UTF-16 of `s`.
    pub fn alloc_str(&mut self, s: &str) -> PWSTR {
        self.alloc(&wide(s))
    }

    /// Frees a string handed out by [`Core::alloc`]; anything else counts as a bad free.
    pub fn free(&mut self, p: *mut c_void) {
        match self.live.remove(&(p as usize)) {
            Some(len) => {
                // SAFETY: `p` came from `alloc` with this length and is freed once (it was
                // removed from `live` above).
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut u16, len)) });
                self.freed += 1;
            }
            None => self.bad_frees += 1,
        }
    }

    /// A new handle value.
    pub fn handle(&mut self) -> usize {
        self.next_handle += 0x10;
        self.next_handle
    }

    /// A handle value for a new system or process: a recycled one when [`Core::reuse_handles`]
    /// is set and one is available, else a new one.
    fn object_handle(&mut self) -> usize {
        match self.recycled.pop() {
            Some(h) if self.reuse_handles => h,
            _ => self.handle(),
        }
    }

    /// A new system handle, recorded as open.
    pub fn open_system(&mut self) -> usize {
        let h = self.object_handle();
        self.systems.insert(h);
        h
    }

    /// A new process handle, recorded as open.
    pub fn open_process(&mut self) -> usize {
        let h = self.object_handle();
        self.processes.insert(h);
        h
    }

    /// Closes system handle `h` (`false` if it was not open); its value may be reused.
    pub fn close_system(&mut self, h: usize) -> bool {
        let open = self.systems.remove(&h);
        if open && self.reuse_handles {
            self.recycled.push(h);
        }
        open
    }

    /// Closes process handle `h` (`false` if it was not open); its value may be reused.
    pub fn close_process(&mut self, h: usize) -> bool {
        let open = self.processes.remove(&h);
        if open && self.reuse_handles {
            self.recycled.push(h);
        }
        open
    }

    /// Records a call to `name`.
    pub fn call(&mut self, name: &'static str) {
        *self.calls.entry(name).or_default() += 1;
    }

    /// How often `name` was called.
    pub fn calls(&self, name: &str) -> usize {
        self.calls.get(name).copied().unwrap_or(0)
    }

    /// Every string handed out was freed exactly once.
    pub fn assert_no_leaks(&self) {
        assert_eq!(
            self.bad_frees, 0,
            "free of a pointer the fake never returned (double free?)"
        );
        assert!(
            self.live.is_empty(),
            "{} returned string(s) never freed",
            self.live.len()
        );
        assert_eq!(self.allocated, self.freed);
    }
}

/// A fake table's process-global state: the tests of one binary run one at a time
/// ([`Global::begin`]) on a freshly reset state.
#[derive(Debug)]
pub struct Global<S> {
    state: Mutex<Option<S>>,
    serial: Mutex<()>,
}

impl<S> Default for Global<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Global<S> {
    /// An uninitialised state (for a `static`).
    pub const fn new() -> Self {
        Global {
            state: Mutex::new(None),
            serial: Mutex::new(()),
        }
    }

    /// Waits for the other tests, then installs `fresh`. Hold the guard for the whole test.
    pub fn begin(&self, fresh: S) -> MutexGuard<'_, ()> {
        let g = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        g
    }

    /// Runs `f` on the state (which [`Global::begin`] must have installed).
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(g.as_mut().expect("fake state initialised (call begin first)"))
    }
}

/// The UTF-16 units of `s` (no NUL).
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// The NUL-terminated UTF-16 of `s`, as HCS passes callback data.
pub fn wide_nul(s: &str) -> Vec<u16> {
    s.encode_utf16().chain([0]).collect()
}

/// A notification as a [`collector`] saw it, with the thread it arrived on.
pub type Seen = (NotificationKind, HResult, Option<String>, std::thread::ThreadId);

/// A registry subscription whose notifications arrive on the returned channel.
pub fn collector() -> (Subscription, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sub = Subscription::new(move |k, st, p| {
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send((
            k,
            st,
            p.map(str::to_owned),
            std::thread::current().id(),
        ));
    });
    (sub, rx)
}

/// A stdio mapper for fake handle values: a reader yields `out{raw:x}`, a writer swallows
/// everything; it records what it wrapped and fails on `fail_on`.
#[derive(Debug, Clone, Default)]
pub struct FakeStdio {
    /// What was wrapped or discarded, in order: `("reader" | "writer" | "failed" | "discard", raw)`.
    pub log: Arc<Mutex<Vec<(&'static str, usize)>>>,
    /// The handle value whose conversion fails (0: none).
    pub fail_on: usize,
}

impl FakeStdio {
    fn note(&self, what: &'static str, raw: usize) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((what, raw));
    }

    /// The log so far.
    pub fn seen(&self) -> Vec<(&'static str, usize)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl StdioMapper for FakeStdio {
    fn reader(&self, raw: usize) -> io::Result<PipeReader> {
        if raw == self.fail_on {
            self.note("failed", raw);
            return Err(io::Error::other("boom"));
        }
        self.note("reader", raw);
        Ok(PipeReader::new(io::Cursor::new(
            format!("out{raw:x}").into_bytes(),
        )))
    }
    fn writer(&self, raw: usize) -> io::Result<PipeWriter> {
        self.note("writer", raw);
        Ok(PipeWriter::new(io::sink()))
    }
    fn discard(&self, raw: usize) {
        self.note("discard", raw);
    }
}

/// An export lookup over `exports` (name → address), for `from_lookup` tests.
pub fn lookup<'a>(
    exports: &'a HashMap<&str, usize>,
) -> impl Fn(&str) -> Option<std::ptr::NonNull<c_void>> + 'a {
    |n| {
        exports
            .get(n)
            .and_then(|a| std::ptr::NonNull::new(*a as *mut c_void))
    }
}

/// A global allocator for fake-table test binaries that overwrites every block with `0xDD`
/// bytes before freeing it, so a fake that reads a string the driver already freed (issue 13
/// item 9: input strings of a pending call) reads `0xDDDD` units (or whatever reused the
/// memory) instead of, by luck, the old text. Install it with
/// `#[global_allocator] static A: PoisonOnFree = PoisonOnFree;`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoisonOnFree;

// SAFETY: every method forwards to `System` with the caller's arguments; `dealloc` only writes
// `layout.size()` bytes into the block it is about to free, which the caller owns.
unsafe impl std::alloc::GlobalAlloc for PoisonOnFree {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes owned by the caller, who is
        // freeing it; then forwarded with the caller's guarantees.
        unsafe {
            std::ptr::write_bytes(ptr, 0xDD, layout.size());
            std::alloc::System.dealloc(ptr, layout)
        }
    }
}

/// A one-shot flag threads wait on (set once, waited on with a timeout).
#[derive(Debug, Clone, Default)]
pub struct Latch(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Latch {
    /// An unset latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the latch and wakes every waiter.
    pub fn set(&self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0 .1.notify_all();
    }

    /// Waits until the latch is set or `timeout` passed; `true` when set.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let g = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .0
             .1
            .wait_timeout_while(g, timeout, |set| !*set)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}
