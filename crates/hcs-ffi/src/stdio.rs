//! Stdio handle plumbing: the conversion of the stdio `HANDLE`s of an
//! `HCS_PROCESS_INFORMATION` into [`PipeReader`]/[`PipeWriter`] through a [`StdioMapper`]
//! ([`SystemStdio`] on the real system, overlapped I/O on Windows), without leaking a handle on
//! any failure path.

use crate::types::{HANDLE, HCS_PROCESS_INFORMATION};
use hcs::{Failure, HResult, PipeReader, PipeWriter, ProcessInfo};
use std::io;

/// `HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)`: stdio handles that cannot be used here.
pub const STDIO_UNSUPPORTED: HResult = HResult(0x8007_0032);

/// `true` for a stdio handle value that means "no stream" (0 or `INVALID_HANDLE_VALUE`).
pub fn is_absent_handle(h: HANDLE) -> bool {
    h.is_null() || h as isize == -1
}

/// Turns raw stdio handles returned by HCS into pipe objects. Each method takes ownership of
/// the handle it is given (it must close it eventually, also on error).
pub trait StdioMapper: Send + Sync + 'static {
    /// Wraps the reading end of stdout or stderr.
    fn reader(&self, raw: usize) -> io::Result<PipeReader>;
    /// Wraps the writing end of stdin.
    fn writer(&self, raw: usize) -> io::Result<PipeWriter>;
    /// Closes a handle that will not be wrapped (a previous conversion failed).
    fn discard(&self, raw: usize);
}

/// The platform's stdio mapping.
///
/// * **Windows:** the handle becomes an `OwnedHandle` inside an adapter that issues every
///   `ReadFile`/`WriteFile` with an `OVERLAPPED` and an event, then waits with
///   `GetOverlappedResult`. That works whether HCS opened the pipe for overlapped I/O or not
///   (std's `File` aborts the process on an overlapped handle whose I/O goes pending).
///   `ERROR_BROKEN_PIPE` on read is end of file.
/// * **Elsewhere:** there are no Windows handles; a non-absent handle (only a fake table can
///   produce one) is rejected with `ErrorKind::Unsupported`. Tests map fake handles with their
///   own [`StdioMapper`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemStdio;

impl StdioMapper for SystemStdio {
    fn reader(&self, raw: usize) -> io::Result<PipeReader> {
        #[cfg(windows)]
        {
            win_pipe::HandlePipe::new(raw).map(PipeReader::new)
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
            Err(no_handles())
        }
    }
    fn writer(&self, raw: usize) -> io::Result<PipeWriter> {
        #[cfg(windows)]
        {
            win_pipe::HandlePipe::new(raw).map(PipeWriter::new)
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
            Err(no_handles())
        }
    }
    fn discard(&self, raw: usize) {
        #[cfg(windows)]
        {
            use std::os::windows::io::{FromRawHandle, OwnedHandle};
            // SAFETY: HCS transferred ownership of this handle to us and nothing else owns it.
            drop(unsafe { OwnedHandle::from_raw_handle(raw as _) });
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
        }
    }
}

#[cfg(not(windows))]
fn no_handles() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows stdio handles cannot be used on this platform",
    )
}

/// Converts the stdio handles of `info` with `mapper` into a [`ProcessInfo`]. On the first
/// failure the handles not yet converted are discarded and converted ones dropped (closed), so
/// nothing leaks; the error is reported as a [`Failure`].
pub fn process_info(
    mapper: &dyn StdioMapper,
    info: &HCS_PROCESS_INFORMATION,
) -> Result<ProcessInfo, Failure> {
    let raw = [info.StdInput, info.StdOutput, info.StdError].map(|h| {
        if is_absent_handle(h) {
            None
        } else {
            Some(h as usize)
        }
    });
    let mut out = ProcessInfo {
        pid: info.ProcessId,
        ..ProcessInfo::default()
    };
    let mut err = None;
    for (i, h) in raw.iter().enumerate() {
        let Some(h) = *h else { continue };
        if err.is_some() {
            mapper.discard(h);
            continue;
        }
        let r = match i {
            0 => mapper.writer(h).map(|w| out.stdin = Some(w)),
            1 => mapper.reader(h).map(|r| out.stdout = Some(r)),
            _ => mapper.reader(h).map(|r| out.stderr = Some(r)),
        };
        if let Err(e) = r {
            err = Some(e);
        }
    }
    match err {
        None => Ok(out),
        Some(e) => {
            tracing::warn!(error = %e, "could not wrap process stdio handles");
            Err(Failure::new(io_error_code(&e)))
        }
    }
}

/// The HRESULT for an I/O error (`HRESULT_FROM_WIN32` of the OS code; `Unsupported` →
/// [`STDIO_UNSUPPORTED`]; otherwise `E_FAIL`).
pub fn io_error_code(e: &io::Error) -> HResult {
    match (e.raw_os_error(), e.kind()) {
        (Some(code), _) if cfg!(windows) && code > 0 => HResult(0x8007_0000 | (code as u32 & 0xFFFF)),
        (_, io::ErrorKind::Unsupported) => STDIO_UNSUPPORTED,
        _ => HResult::E_FAIL,
    }
}

#[cfg(windows)]
mod win_pipe {
    use std::io::{self, Read, Write};
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
    use windows_sys::Win32::Foundation::{
        GetLastError, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_IO_PENDING,
    };
    use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
    use windows_sys::Win32::System::Threading::CreateEventW;
    use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

    /// A pipe handle used through OVERLAPPED I/O with a private event (see `SystemStdio`).
    pub(super) struct HandlePipe {
        handle: OwnedHandle,
        event: OwnedHandle,
    }

    impl HandlePipe {
        pub(super) fn new(raw: usize) -> io::Result<Self> {
            // SAFETY: HCS transferred ownership of this handle to us; it is closed by OwnedHandle.
            let handle = unsafe { OwnedHandle::from_raw_handle(raw as _) };
            // SAFETY: plain Win32 call with null (default) security attributes and name;
            // manual-reset, initially non-signalled.
            let ev = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
            if ev.is_null() {
                return Err(io::Error::last_os_error()); // `handle` drops: closed
            }
            // SAFETY: `ev` is a fresh event handle we own.
            let event = unsafe { OwnedHandle::from_raw_handle(ev) };
            Ok(HandlePipe { handle, event })
        }

        fn io(&self, buf: *mut u8, len: usize, write: bool) -> io::Result<usize> {
            let len = len.min(u32::MAX as usize) as u32;
            // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
            let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
            ov.hEvent = self.event.as_raw_handle();
            let mut n: u32 = 0;
            let h = self.handle.as_raw_handle();
            // SAFETY: `buf` is valid for `len` bytes for the whole call: we wait for completion
            // (GetOverlappedResult with bWait = TRUE) before returning, so neither `buf` nor
            // `ov` is used by the system after this function returns.
            let ok = unsafe {
                if write {
                    WriteFile(h, buf, len, &mut n, &mut ov)
                } else {
                    ReadFile(h, buf, len, &mut n, &mut ov)
                }
            };
            if ok == 0 {
                // SAFETY: plain Win32 call.
                let err = unsafe { GetLastError() };
                if err != ERROR_IO_PENDING {
                    return eof_or(err, write);
                }
            }
            // SAFETY: `ov` is the OVERLAPPED of the operation just issued on `h`; wait = TRUE.
            let ok = unsafe { GetOverlappedResult(h, &ov, &mut n, 1) };
            if ok == 0 {
                // SAFETY: plain Win32 call.
                return eof_or(unsafe { GetLastError() }, write);
            }
            Ok(n as usize)
        }
    }

    fn eof_or(err: u32, write: bool) -> io::Result<usize> {
        if !write && (err == ERROR_BROKEN_PIPE || err == ERROR_HANDLE_EOF) {
            Ok(0)
        } else {
            Err(io::Error::from_raw_os_error(err as i32))
        }
    }

    impl Read for HandlePipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.io(buf.as_mut_ptr(), buf.len(), false)
        }
    }

    impl Write for HandlePipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.io(buf.as_ptr().cast_mut(), buf.len(), true)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
