//! Shared plumbing of the fake `vmcompute.dll` (`fake-vmcompute`) and `computecore.dll`
//! (`fake-computecore`) test DLLs (design FFI §7.3).
//!
//! Each fake DLL links its own copy of this crate (and of `hcs` and `hcs-sim`), so every static
//! here is per DLL: one process-global [`hcs_sim::Simulator`] per DLL, one string counter per
//! DLL. The DLL plays HCS; the test executable's driver plays the client.
//!
//! * [`sim`]: the DLL's simulator (scripted backend, [`script`]).
//! * [`Strings`]: result strings allocated with the allocator the driver frees with
//!   (`CoTaskMemAlloc` for V1, `LocalAlloc` for V2), with an exact outstanding count: the tests
//!   report every free through the DLL's `FakeHcsNoteStringFreed` export.
//! * [`command`]: the small built-in command vocabulary (`exit N`, `echo TEXT`, `cat`,
//!   `sleep`) and the rewriting of process parameters it needs.
//! * [`stdio`] (Windows): turns the simulator's in-memory streams into real anonymous-pipe
//!   `HANDLE`s with relay threads owned by the DLL.
#![allow(unsafe_code)]

use hcs::{
    ApiGeneration, CallbackHandle, Driver, Failure, HResult, NotifyContext, ProcessHandle, SystemHandle,
};
use hcs_ffi::HCS_PROCESS_INFORMATION;
use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// `ERROR_VMCOMPUTE_OPERATION_PENDING` as the `i32` HRESULT V1 returns.
pub const V1_PENDING: i32 = HResult::ERROR_VMCOMPUTE_OPERATION_PENDING.as_i32();
/// `E_INVALIDARG`.
pub const E_INVALIDARG: i32 = HResult::E_INVALIDARG.as_i32();
/// `E_POINTER`.
pub const E_POINTER: i32 = 0x8000_4003_u32 as i32;
/// `E_NOTIMPL`.
pub const E_NOTIMPL: i32 = HResult::E_NOTIMPL.as_i32();
/// `E_HANDLE`.
pub const E_HANDLE: i32 = HResult::E_HANDLE.as_i32();

/// Poison-tolerant lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------
// The simulator

/// The built-in script: `exit 0` … `exit 255` exit with that code; `echo` exits 0 at once
/// (its text is produced by the DLL, see [`command`]); `sleep` and `cat` run until they are
/// signalled, terminated or their system stops. Any other command line is "file not found"
/// (`0x80070002`), like a missing program.
pub fn script() -> Script {
    let mut s = Script::new()
        .on("echo", ScriptedProcess::exits(0))
        .on("sleep", ScriptedProcess::forever())
        .on("cat", ScriptedProcess::forever());
    for n in 0..=255u32 {
        s = s.on(format!("exit {n}"), ScriptedProcess::exits(n));
    }
    s
}

/// The DLL's process-global simulator, created on first use with `generation`'s encodings,
/// the scripted backend ([`script`]) and the default (pending, 1 ms latency) timing.
pub fn sim(generation: ApiGeneration) -> &'static Arc<Simulator> {
    static SIM: OnceLock<Arc<Simulator>> = OnceLock::new();
    SIM.get_or_init(|| {
        Simulator::new(
            SimConfig::default()
                .scripted(script())
                .generation(generation)
                .shutdown_grace(std::time::Duration::from_millis(500)),
        )
    })
}

// ------------------------------------------------------------------------------------------
// UTF-16

/// Reads a NUL-terminated UTF-16 string (`None` for null; invalid UTF-16 is replaced).
///
/// # Safety
///
/// `p` is null or a readable NUL-terminated UTF-16 string.
pub unsafe fn from_wide(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut len = 0usize;
    // SAFETY: the caller guarantees a readable NUL-terminated string; we stop at the NUL.
    let units = unsafe {
        while *p.add(len) != 0 {
            len += 1;
        }
        std::slice::from_raw_parts(p, len)
    };
    Some(String::from_utf16_lossy(units))
}

/// NUL-terminated UTF-16 of `s`.
pub fn to_wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

// ------------------------------------------------------------------------------------------
// Result strings

/// The allocator of returned strings (`CoTaskMemAlloc` / `LocalAlloc`); null on failure.
pub type AllocFn = unsafe fn(bytes: usize) -> *mut c_void;

/// The strings this DLL handed out and that the client has not reported freed yet.
pub struct Strings {
    live: Mutex<BTreeSet<usize>>,
    alloc: AllocFn,
}

impl Strings {
    /// A counter allocating with `alloc`.
    pub const fn new(alloc: AllocFn) -> Self {
        Strings {
            live: Mutex::new(BTreeSet::new()),
            alloc,
        }
    }

    /// Stores a freshly allocated copy of `s` into `*out` (nothing for `None` or a null `out`).
    ///
    /// # Safety
    ///
    /// `out` is null or a writable `PWSTR` slot.
    pub unsafe fn put(&self, out: *mut *mut u16, s: Option<&str>) {
        let (false, Some(s)) = (out.is_null(), s) else {
            return;
        };
        let w = to_wide(s);
        // SAFETY: plain allocation of `w.len()` u16s with the DLL's allocator.
        let p = unsafe { (self.alloc)(w.len() * 2) }.cast::<u16>();
        if p.is_null() {
            return;
        }
        // SAFETY: `p` has room for `w.len()` u16s and does not overlap `w`; `out` is writable.
        unsafe {
            std::ptr::copy_nonoverlapping(w.as_ptr(), p, w.len());
            *out = p;
        }
        lock(&self.live).insert(p as usize);
    }

    /// Records that the client freed `p`; `false` if `p` was not an outstanding string of
    /// this DLL (a double or foreign free).
    pub fn note_freed(&self, p: *mut c_void) -> bool {
        lock(&self.live).remove(&(p as usize))
    }

    /// Strings handed out and not reported freed.
    pub fn outstanding(&self) -> usize {
        lock(&self.live).len()
    }
}

/// Stores `doc` (the result document of `f`) into `result` and returns the HRESULT.
///
/// # Safety
///
/// `result` is null or a writable `PWSTR` slot.
pub unsafe fn fail(strings: &Strings, result: *mut *mut u16, f: Failure) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { strings.put(result, f.document.as_deref()) };
    f.code.0 as i32
}

/// The HRESULT as the `i32` HCS returns.
pub fn hr(h: HResult) -> i32 {
    h.0 as i32
}

// ------------------------------------------------------------------------------------------
// Built-in commands

/// What the DLL adds to a scripted process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extra {
    /// Bytes the DLL writes to stdout before the simulator's own output (`echo TEXT`).
    pub stdout_prefix: Vec<u8>,
    /// `cat`: stdin is copied to stdout as well as to the simulator (stdout ends at stdin's end;
    /// the process itself runs until killed, the scripted backend cannot exit on EOF).
    pub echo_stdin: bool,
}

/// Rewrites the `CommandLine` of a process-parameters document for the built-in vocabulary:
/// `echo TEXT` → `echo` plus `TEXT\n` on stdout from the DLL; `sleep ARGS` → `sleep`; `cat`
/// echoes stdin. Anything else is passed through unchanged.
pub fn command(parameters: &str) -> (String, Extra) {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(parameters) else {
        return (parameters.to_string(), Extra::default());
    };
    let Some(line) = v.get("CommandLine").and_then(|c| c.as_str()).map(str::trim) else {
        return (parameters.to_string(), Extra::default());
    };
    let mut extra = Extra::default();
    let new_line = if let Some(text) = line.strip_prefix("echo ") {
        extra.stdout_prefix = format!("{text}\n").into_bytes();
        "echo".to_string()
    } else if line.starts_with("sleep ") {
        "sleep".to_string()
    } else if line == "cat" {
        extra.echo_stdin = true;
        return (parameters.to_string(), extra);
    } else {
        return (parameters.to_string(), extra);
    };
    v["CommandLine"] = serde_json::Value::String(new_line);
    (v.to_string(), extra)
}

// ------------------------------------------------------------------------------------------
// Stdio

/// Stdio handles as HCS returns them (`0` = no stream).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawStdio {
    /// Write end of the process's stdin.
    pub stdin: usize,
    /// Read end of its stdout.
    pub stdout: usize,
    /// Read end of its stderr.
    pub stderr: usize,
}

/// Turns the simulator's streams into Windows pipe handles the client owns, with relay
/// threads owned by the DLL. Off Windows every stream is reported absent.
pub fn stdio(info: hcs::ProcessInfo, extra: &Extra) -> RawStdio {
    #[cfg(windows)]
    {
        win::stdio(info, extra)
    }
    #[cfg(not(windows))]
    {
        let _ = (info, extra);
        RawStdio::default()
    }
}

#[cfg(windows)]
mod win {
    use super::{Extra, RawStdio};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::windows::io::{FromRawHandle, IntoRawHandle, OwnedHandle};
    use std::sync::{Arc, Mutex};
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::Pipes::CreatePipe;

    fn pipe() -> Option<(File, File)> {
        let mut r: HANDLE = std::ptr::null_mut();
        let mut w: HANDLE = std::ptr::null_mut();
        // SAFETY: both out-slots are valid; default security attributes, default size.
        let ok = unsafe { CreatePipe(&mut r, &mut w, std::ptr::null(), 0) };
        if ok == 0 {
            return None;
        }
        // SAFETY: CreatePipe returned two fresh handles that nothing else owns.
        let (r, w) = unsafe { (OwnedHandle::from_raw_handle(r), OwnedHandle::from_raw_handle(w)) };
        Some((File::from(r), File::from(w)))
    }

    fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
        let _ = std::thread::Builder::new().name(name.into()).spawn(f);
    }

    /// A reading end for the client fed from `src` by a relay thread.
    fn out_pipe(mut src: Box<dyn Read + Send>) -> usize {
        let Some((r, mut w)) = pipe() else { return 0 };
        spawn("fake-hcs-stdout", move || {
            let _ = std::io::copy(&mut src, &mut w);
        });
        r.into_raw_handle() as usize
    }

    pub(super) fn stdio(info: hcs::ProcessInfo, extra: &Extra) -> RawStdio {
        let mut raw = RawStdio::default();
        // `cat`: the stdout pipe is fed by the stdin relay.
        let mut echo: Option<File> = None;
        if let Some(sim_out) = info.stdout {
            let prefix = std::io::Cursor::new(extra.stdout_prefix.clone());
            if extra.echo_stdin && info.stdin.is_some() {
                if let Some((r, w)) = pipe() {
                    raw.stdout = r.into_raw_handle() as usize;
                    echo = Some(w);
                }
            } else {
                raw.stdout = out_pipe(Box::new(prefix.chain(sim_out)));
            }
        }
        if let Some(sim_err) = info.stderr {
            raw.stderr = out_pipe(Box::new(sim_err));
        }
        if let Some(sim_in) = info.stdin {
            if let Some((mut r, w)) = pipe() {
                raw.stdin = w.into_raw_handle() as usize;
                let sim_in = Arc::new(Mutex::new(sim_in));
                spawn("fake-hcs-stdin", move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let _ = super::lock(&sim_in).write_all(&buf[..n]);
                        if let Some(e) = echo.as_mut() {
                            if e.write_all(&buf[..n]).is_err() {
                                echo = None;
                            }
                        }
                    }
                    // Dropping `echo` ends the client's stdout.
                });
            }
        }
        raw
    }
}

/// Writes process `pid` with the stdio handles `raw` to `out`; with a null `out` nobody can
/// receive the handles, so they are closed.
///
/// # Safety
///
/// `out` is null or a writable `HCS_PROCESS_INFORMATION`.
pub unsafe fn write_process_info(out: *mut HCS_PROCESS_INFORMATION, pid: u32, raw: RawStdio) {
    if out.is_null() {
        for h in [raw.stdin, raw.stdout, raw.stderr] {
            close_raw(h);
        }
        return;
    }
    // SAFETY: non-null and writable (caller's contract).
    unsafe {
        *out = HCS_PROCESS_INFORMATION {
            ProcessId: pid,
            Reserved: 0,
            StdInput: raw.stdin as *mut c_void,
            StdOutput: raw.stdout as *mut c_void,
            StdError: raw.stderr as *mut c_void,
        }
    };
}

// ------------------------------------------------------------------------------------------
// Handles and registrations

/// The simulator's system handle for an HCS handle value (`None` for null).
pub fn system_handle(h: *mut c_void) -> Option<SystemHandle> {
    SystemHandle::new(h as usize as u64)
}

/// The simulator's process handle for an HCS handle value (`None` for null).
pub fn process_handle(h: *mut c_void) -> Option<ProcessHandle> {
    ProcessHandle::new(h as usize as u64)
}

/// Registers notification context `ctx` with the simulator for system (`is_system`) or process
/// handle `h`; `Err` carries the HRESULT to return.
pub fn register_callback(
    sim: &Simulator,
    h: u64,
    is_system: bool,
    ctx: NotifyContext,
) -> Result<CallbackHandle, i32> {
    let r = if is_system {
        SystemHandle::new(h).map(|s| sim.register_compute_system_callback(s, ctx))
    } else {
        ProcessHandle::new(h).map(|p| sim.register_process_callback(p, ctx))
    };
    match r {
        None => Err(E_HANDLE),
        Some(Err(f)) => Err(hr(f.code)),
        Some(Ok(c)) => Ok(c),
    }
}

// ------------------------------------------------------------------------------------------
// Test-only exports

/// Copies what was written to the stdin of scripted process `pid` of system `id` into `buf` (at
/// most `cap` bytes). Returns the full length, or -1 when the process is unknown.
///
/// # Safety
///
/// `id` is null or a valid string; `buf` is null or has `cap` writable bytes.
pub unsafe fn scripted_stdin(sim: &Simulator, id: *const u16, pid: u32, buf: *mut u8, cap: usize) -> i64 {
    // SAFETY: the caller's contract.
    let Some(id) = (unsafe { from_wide(id) }) else {
        return -1;
    };
    let Some(data) = sim.scripted_stdin(&id, pid) else {
        return -1;
    };
    if !buf.is_null() {
        // SAFETY: the caller supplies `cap` writable bytes at `buf`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len().min(cap)) };
    }
    data.len() as i64
}

/// Writes the simulator's open system handles, process handles and callback registrations to
/// the non-null slots.
///
/// # Safety
///
/// Each slot is null or writable.
pub unsafe fn handle_counts(sim: &Simulator, systems: *mut u64, processes: *mut u64, callbacks: *mut u64) {
    let c = sim.handle_counts();
    for (out, v) in [
        (systems, c.systems),
        (processes, c.processes),
        (callbacks, c.callbacks),
    ] {
        if !out.is_null() {
            // SAFETY: non-null slots are writable (caller's contract).
            unsafe { *out = v as u64 };
        }
    }
}

/// Defines the test-only exports every fake DLL has, over its [`Strings`] (`$strings`), its
/// simulator (`$sim`, an expression of type `&Simulator`) and the number of callback
/// registrations it still holds (`$subscriptions`, an `i64`-convertible expression):
/// `FakeHcsOutstandingStrings`, `FakeHcsNoteStringFreed` (the client reports a free just before
/// making it; 1 when the string was outstanding, 0 for a double or foreign free),
/// `FakeHcsHandleCounts`, `FakeHcsLiveSubscriptions` and `FakeHcsScriptedStdin`.
#[macro_export]
macro_rules! test_exports {
    (strings: $strings:expr, sim: $sim:expr, subscriptions: $subscriptions:expr $(,)?) => {
        /// Result strings handed out and not yet reported freed through `FakeHcsNoteStringFreed`.
        #[no_mangle]
        pub extern "system" fn FakeHcsOutstandingStrings() -> i64 {
            $strings.outstanding() as i64
        }

        /// The client reports that it freed `p` (just before freeing it). Returns 1 when `p` was
        /// an outstanding string of this DLL, 0 otherwise (double or foreign free).
        #[no_mangle]
        pub extern "system" fn FakeHcsNoteStringFreed(p: *mut ::std::ffi::c_void) -> i32 {
            i32::from($strings.note_freed(p))
        }

        /// The simulator's open system handles, process handles and callback registrations.
        #[no_mangle]
        pub unsafe extern "system" fn FakeHcsHandleCounts(
            systems: *mut u64,
            processes: *mut u64,
            callbacks: *mut u64,
        ) {
            // SAFETY: the test supplies null or writable slots.
            unsafe { $crate::handle_counts($sim, systems, processes, callbacks) }
        }

        /// Callback registrations this DLL still holds (foreign callbacks it could call).
        #[no_mangle]
        pub extern "system" fn FakeHcsLiveSubscriptions() -> i64 {
            ($subscriptions) as i64
        }

        /// Copies what was written to the stdin of scripted process `pid` of system `id` into
        /// `buf` (at most `cap` bytes). Returns the full length, or -1 when the process is unknown.
        #[no_mangle]
        pub unsafe extern "system" fn FakeHcsScriptedStdin(
            id: *const u16,
            pid: u32,
            buf: *mut u8,
            cap: usize,
        ) -> i64 {
            // SAFETY: the test passes a valid string and `cap` writable bytes at `buf`.
            unsafe { $crate::scripted_stdin($sim, id, pid, buf, cap) }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Allocators of returned strings

/// `CoTaskMemAlloc` (V1 strings, freed by the client with `CoTaskMemFree`); off Windows no
/// client could free a string, so none is allocated (strings are reported absent).
///
/// # Safety
///
/// Plain allocation; the result is null or `bytes` writable bytes.
pub unsafe fn co_task_mem_alloc(bytes: usize) -> *mut c_void {
    #[cfg(windows)]
    {
        // SAFETY: plain allocation.
        unsafe { windows_sys::Win32::System::Com::CoTaskMemAlloc(bytes) }
    }
    #[cfg(not(windows))]
    {
        let _ = bytes;
        std::ptr::null_mut()
    }
}

/// `LocalAlloc(LMEM_FIXED)` (V2 strings, freed by the client with `LocalFree`); off Windows
/// nothing is allocated, as for [`co_task_mem_alloc`].
///
/// # Safety
///
/// Plain allocation; the result is null or `bytes` writable bytes.
pub unsafe fn local_alloc(bytes: usize) -> *mut c_void {
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Memory::{LocalAlloc, LMEM_FIXED};
        // SAFETY: plain allocation.
        unsafe { LocalAlloc(LMEM_FIXED, bytes) }
    }
    #[cfg(not(windows))]
    {
        let _ = bytes;
        std::ptr::null_mut()
    }
}

/// Closes a handle this DLL created but could not hand out.
pub fn close_raw(h: usize) {
    #[cfg(windows)]
    if h != 0 {
        use std::os::windows::io::{FromRawHandle, OwnedHandle};
        // SAFETY: `h` came from CreatePipe in this DLL and was not handed to anyone.
        drop(unsafe { OwnedHandle::from_raw_handle(h as _) });
    }
    #[cfg(not(windows))]
    let _ = h;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_rewritten_and_its_text_produced_by_the_dll() {
        let (p, e) = command(r#"{"CommandLine":"echo hello world","CreateStdOutPipe":true}"#);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["CommandLine"], "echo");
        assert_eq!(v["CreateStdOutPipe"], true);
        assert_eq!(e.stdout_prefix, b"hello world\n");
        let (p, e) = command(r#"{"CommandLine":"cat"}"#);
        assert!(e.echo_stdin);
        assert_eq!(p, r#"{"CommandLine":"cat"}"#);
        let (p, _) = command(r#"{"CommandLine":"exit 3"}"#);
        assert_eq!(p, r#"{"CommandLine":"exit 3"}"#);
    }

    #[test]
    fn script_knows_the_vocabulary() {
        let s = script();
        assert_eq!(s.commands["exit 7"].exit_code, 7);
        assert!(s.commands["sleep"].runtime.is_none());
        assert!(!s.commands.contains_key("nosuch"));
    }

    #[test]
    fn strings_are_counted_until_reported_freed() {
        unsafe fn boxed(bytes: usize) -> *mut c_void {
            Box::into_raw(vec![0u8; bytes].into_boxed_slice()).cast()
        }
        let s = Strings::new(boxed);
        let mut p: *mut u16 = std::ptr::null_mut();
        // SAFETY: `p` is a writable slot.
        unsafe { s.put(&mut p, Some("hi")) };
        assert!(!p.is_null());
        // SAFETY: `p` was just written with a NUL-terminated string.
        assert_eq!(unsafe { from_wide(p) }.as_deref(), Some("hi"));
        assert_eq!(s.outstanding(), 1);
        assert!(s.note_freed(p.cast()));
        assert!(!s.note_freed(p.cast()));
        assert_eq!(s.outstanding(), 0);
        // SAFETY: allocated above by `boxed` with 6 bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p.cast::<u8>(), 6)) });
    }
}
