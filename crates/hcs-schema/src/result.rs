//! The result/error document HCS returns alongside a failing call (`hcsResult` in hcsshim).

use serde::{Deserialize, Serialize};

/// HCS's result document: `{"Error": HRESULT, "ErrorMessage": "...", "ErrorEvents": [...]}`.
///
/// Every field is optional on input; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ResultDocument {
    /// The failing HRESULT, as a signed 32-bit value.
    pub error: i32,
    /// A human-readable message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error_message: String,
    /// Structured events describing the failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_events: Vec<ErrorEvent>,
}

impl ResultDocument {
    /// Parses a result document. An empty (or all-whitespace) string is `Ok(None)`.
    pub fn parse(text: &str) -> Result<Option<Self>, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(text).map(Some)
    }
}

/// One event of a result document (`ErrorEvent` in hcsshim).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ErrorEvent {
    /// Event message.
    pub message: String,
    /// Stack trace, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stack_trace: String,
    /// Event provider GUID or name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Event id.
    #[serde(rename = "EventId", skip_serializing_if = "is_zero_u16")]
    pub event_id: u16,
    /// Event flags.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    /// Source of the event.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Extra event data; kept but not interpreted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<serde_json::Value>,
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl std::fmt::Display for ErrorEvent {
    /// Renders as `[Event Detail: <Message> Stack Trace: .. Provider: .. EventID: n flags: n Source: ..]`
    /// with each optional part present only when non-empty / non-zero.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[Event Detail: {}", self.message)?;
        if !self.stack_trace.is_empty() {
            write!(f, " Stack Trace: {}", self.stack_trace)?;
        }
        if !self.provider.is_empty() {
            write!(f, " Provider: {}", self.provider)?;
        }
        if self.event_id != 0 {
            write!(f, " EventID: {}", self.event_id)?;
        }
        if self.flags != 0 {
            write!(f, " flags: {}", self.flags)?;
        }
        if !self.source.is_empty() {
            write!(f, " Source: {}", self.source)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_event_display_includes_only_present_parts() {
        let e = ErrorEvent {
            message: "boom".into(),
            event_id: 7,
            ..Default::default()
        };
        assert_eq!(e.to_string(), "[Event Detail: boom EventID: 7]");
        let e = ErrorEvent {
            message: "m".into(),
            stack_trace: "st".into(),
            provider: "p".into(),
            event_id: 1,
            flags: 2,
            source: "s".into(),
            data: vec![],
        };
        assert_eq!(
            e.to_string(),
            "[Event Detail: m Stack Trace: st Provider: p EventID: 1 flags: 2 Source: s]"
        );
    }

    #[test]
    fn result_document_parses_with_unknown_fields_and_empty_is_none() {
        let d = ResultDocument::parse(
            r#"{"Error":-2143878898,"ErrorMessage":"x","ErrorEvents":[{"Message":"a","EventId":3,"Data":[{"Type":"x"}]}],"Extra":1}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.error as u32, 0x8037010E);
        assert_eq!(d.error_events[0].event_id, 3);
        assert_eq!(ResultDocument::parse("  ").unwrap(), None);
        assert!(ResultDocument::parse("{not json").is_err());
    }
}
