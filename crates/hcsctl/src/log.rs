//! `hcsctl`'s default logger, used when neither `-v` nor `RUST_LOG` is given: error events only,
//! one line each on stderr (`hcsctl: error: <target>: <message> <field>=<value>...`). It is a
//! plain [`tracing::Subscriber`] with no span registry, because setting up
//! `tracing-subscriber`'s registry is a measurable part of a short `hcsctl run`'s start-up.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata, Subscriber};

/// Writes error events to stderr and ignores everything else.
pub(crate) struct ErrorsToStderr;

/// Lines held back by [`defer`] until [`flush_deferred`].
static DEFERRED: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

/// Holds error lines back from now on (during a teardown, so that the main error is printed
/// first).
pub(crate) fn defer() {
    let mut d = DEFERRED.lock().unwrap_or_else(|p| p.into_inner());
    d.get_or_insert_with(Vec::new);
}

/// Writes the lines held back since [`defer`] and stops holding them back.
pub(crate) fn flush_deferred() {
    let lines = DEFERRED.lock().unwrap_or_else(|p| p.into_inner()).take();
    for line in lines.into_iter().flatten() {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

impl ErrorsToStderr {
    /// The line written for `event`, without the newline.
    fn line(event: &Event<'_>) -> String {
        let mut line = format!("hcsctl: error: {}:", event.metadata().target());
        event.record(&mut Fields(&mut line));
        line
    }
}

impl Subscriber for ErrorsToStderr {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() == Level::ERROR
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::ERROR)
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        // Never called for an enabled span (none is); any non-zero id will do.
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Self::line(event);
        line.push('\n');
        if let Some(held) = DEFERRED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            held.push(line);
            return;
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Appends an event's fields: the message as is, the others as ` name=value` (strings quoted).
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures the lines [`ErrorsToStderr`] would write.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Capture {
        fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
            ErrorsToStderr.register_callsite(meta)
        }
        fn enabled(&self, meta: &Metadata<'_>) -> bool {
            ErrorsToStderr.enabled(meta)
        }
        fn new_span(&self, a: &span::Attributes<'_>) -> span::Id {
            ErrorsToStderr.new_span(a)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(ErrorsToStderr::line(event));
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[test]
    fn only_error_events_are_written_with_message_and_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), || {
            tracing::warn!("not shown");
            tracing::info!(x = 1, "not shown either");
            let _span = tracing::error_span!("a span").entered();
            tracing::error!(code = 7, name = "sim", "it broke: {}", "badly");
        });
        let lines = lines.lock().unwrap();
        assert_eq!(
            *lines,
            vec![r#"hcsctl: error: hcsctl::log::tests: it broke: badly code=7 name="sim""#.to_string()]
        );
    }

    #[test]
    fn the_level_hint_is_error() {
        assert_eq!(ErrorsToStderr.max_level_hint(), Some(LevelFilter::ERROR));
    }
}
