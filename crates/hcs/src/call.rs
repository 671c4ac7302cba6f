//! One way to call the driver. Every lifecycle operation that uses an object's handle goes
//! through [`Target::call`]: take a handle use (so Close waits for the call, never the other
//! way round: design C2, I10), run the driver call inside a `tracing` span that records the
//! call, the object, the duration and the HRESULT, and turn a [`Failure`] into an [`Error`]
//! scoped to the object and named after the public operation. The pending rule (design §2.3)
//! is applied here once: only `Ok(Reply::pending(..))` means pending.

use crate::driver::{DriverResult, Failure, Reply};
use crate::error::{Cause, Error, Result};
use crate::guard::HandleCell;
use crate::hresult::HResult;
use std::borrow::Cow;
use std::time::Instant;

/// The object a call is about: a compute system (`pid == None`) or a process in it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// The compute system's id.
    pub id: &'a str,
    /// The process id, for process calls.
    pub pid: Option<u32>,
}

impl<'a> Target<'a> {
    /// A compute system.
    pub(crate) fn system(id: &'a str) -> Self {
        Target { id, pid: None }
    }
    /// A process in the compute system `id`.
    pub(crate) fn process(id: &'a str, pid: u32) -> Self {
        Target { id, pid: Some(pid) }
    }

    /// An error of operation `op` scoped to this object.
    pub(crate) fn err(&self, op: impl Into<Cow<'static, str>>, cause: impl Into<Error>) -> Error {
        match self.pid {
            Some(pid) => Error::process(op, self.id, pid, cause),
            None => Error::system(op, self.id, cause),
        }
    }

    /// Runs one driver call inside a `tracing` span (no handle use: for calls that do not use
    /// the object's handle, or that already hold it).
    pub(crate) fn traced<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> DriverResult<T>,
    ) -> DriverResult<T> {
        let span = tracing::debug_span!("hcs_call", call, id = self.id, pid = self.pid);
        let _enter = span.enter();
        let start = Instant::now();
        let r = f();
        let elapsed_us = start.elapsed().as_micros() as u64;
        match &r {
            Ok(reply) => tracing::debug!(elapsed_us, pending = reply.pending, "ok"),
            Err(f) => tracing::debug!(elapsed_us, hresult = %f.code, "failed"),
        }
        r
    }

    /// Like [`Target::traced`] for the calls that cannot pend (`Result<T, Failure>`).
    pub(crate) fn traced_plain<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, Failure> {
        self.traced(call, || f().map(Reply::done)).map(|r| r.value)
    }

    /// Handle use → span → scoped error: the reply as the driver gave it (pending included),
    /// or an error of `op`. A closed handle is an already-closed error and no driver call.
    pub(crate) fn call<H: Copy, T>(
        &self,
        cell: &HandleCell<H>,
        op: &'static str,
        call: &'static str,
        f: impl FnOnce(H) -> DriverResult<T>,
    ) -> Result<Reply<T>> {
        self.call_raw(cell, op, call, f)?.map_err(|f| self.err(op, &f))
    }

    /// [`Target::call`] that hands back the driver's answer unconverted (for rules that read
    /// the raw failure, like Signal's "process gone" family); only a closed handle is an error.
    pub(crate) fn call_raw<H: Copy, T>(
        &self,
        cell: &HandleCell<H>,
        op: &'static str,
        call: &'static str,
        f: impl FnOnce(H) -> DriverResult<T>,
    ) -> Result<DriverResult<T>> {
        let Some(u) = cell.acquire() else {
            return Err(self.err(op, Cause::AlreadyClosed));
        };
        let r = self.traced(call, || f(u.handle()));
        drop(u);
        Ok(r)
    }

    /// [`Target::call`] for a call that completes synchronously: a pending reply is an error
    /// for which `is_pending()` holds (HCS has no completion to deliver for these calls).
    pub(crate) fn call_done<H: Copy, T>(
        &self,
        cell: &HandleCell<H>,
        op: &'static str,
        call: &'static str,
        f: impl FnOnce(H) -> DriverResult<T>,
    ) -> Result<T> {
        let reply = self.call(cell, op, call, f)?;
        if reply.pending {
            return Err(self.err(op, Cause::Hcs(HResult::ERROR_VMCOMPUTE_OPERATION_PENDING)));
        }
        Ok(reply.value)
    }
}
