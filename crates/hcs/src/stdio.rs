//! Standard-stream objects handed out by a [`crate::Process`].
//!
//! Drivers turn whatever HCS (or the simulator) returns into these: on Windows an owned pipe
//! `HANDLE` (wrapped in a `File`, or an adapter for overlapped pipes), on Unix an owned fd, and in
//! tests any in-memory reader or writer. The lifecycle layer only moves them around; each is
//! handed out at most once.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};

enum ReaderInner {
    File(File),
    Boxed(Box<dyn Read + Send>),
}

enum WriterInner {
    File(File),
    Boxed(Box<dyn Write + Send>),
}

/// The reading end of a process's stdout or stderr.
pub struct PipeReader(ReaderInner);

/// The writing end of a process's stdin. Dropping it closes the stream (EOF for the process).
pub struct PipeWriter(WriterInner);

impl PipeReader {
    /// Wraps an OS pipe (a Unix fd or a Windows handle, both convertible into `File`).
    pub fn from_file(file: File) -> Self {
        PipeReader(ReaderInner::File(file))
    }
    /// Wraps any reader (in-memory pipes, adapters for overlapped handles, ...).
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        PipeReader(ReaderInner::Boxed(Box::new(reader)))
    }
    /// The underlying OS pipe, if this reader is one (for raw-fd/handle relays).
    pub fn into_file(self) -> Result<File, Self> {
        match self.0 {
            ReaderInner::File(f) => Ok(f),
            other => Err(PipeReader(other)),
        }
    }
}

impl PipeWriter {
    /// Wraps an OS pipe.
    pub fn from_file(file: File) -> Self {
        PipeWriter(WriterInner::File(file))
    }
    /// Wraps any writer.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        PipeWriter(WriterInner::Boxed(Box::new(writer)))
    }
    /// The underlying OS pipe, if this writer is one.
    pub fn into_file(self) -> Result<File, Self> {
        match self.0 {
            WriterInner::File(f) => Ok(f),
            other => Err(PipeWriter(other)),
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            ReaderInner::File(f) => f.read(buf),
            ReaderInner::Boxed(r) => r.read(buf),
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            WriterInner::File(f) => f.write(buf),
            WriterInner::Boxed(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            WriterInner::File(f) => f.flush(),
            WriterInner::Boxed(w) => w.flush(),
        }
    }
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ReaderInner::File(file) => f.debug_tuple("PipeReader").field(file).finish(),
            ReaderInner::Boxed(_) => f.write_str("PipeReader(<reader>)"),
        }
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            WriterInner::File(file) => f.debug_tuple("PipeWriter").field(file).finish(),
            WriterInner::Boxed(_) => f.write_str("PipeWriter(<writer>)"),
        }
    }
}

/// The three standard streams of a process; any may be absent.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Standard input.
    pub stdin: Option<PipeWriter>,
    /// Standard output.
    pub stdout: Option<PipeReader>,
    /// Standard error.
    pub stderr: Option<PipeReader>,
}
