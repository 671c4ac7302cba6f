//! The enumerate query (`schema1.ComputeSystemQuery`).

use serde::{Deserialize, Serialize};

/// Filters for enumerating compute systems. Empty members are omitted, so
/// `{Ids: ["a"]}` serialises as `{"Ids":["a"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ComputeSystemQuery {
    /// Only these ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Only these system types (`Container`, `VirtualMachine`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Only these names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Only these owners.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_members_are_omitted() {
        let q = ComputeSystemQuery {
            ids: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"Ids":["a"]}"#);
        assert_eq!(
            serde_json::to_string(&ComputeSystemQuery::default()).unwrap(),
            "{}"
        );
    }
}
