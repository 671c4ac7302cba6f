//! Documents of the service-level calls `HcsGetServiceProperties` / `HcsModifyServiceSettings`:
//! the [`ServicePropertyQuery`], the [`ServiceProperties`] answer, and the `Basic` property
//! ([`BasicInformation`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::system::SchemaVersion;

/// A property type of the service (`GetPropertyType` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServicePropertyType {
    /// Basic information: the supported schema versions ([`BasicInformation`]).
    Basic,
    /// Host memory.
    Memory,
    /// CPU groups.
    CpuGroup,
    /// Host processor topology.
    ProcessorTopology,
    /// Cache allocation.
    CacheAllocation,
    /// Cache monitoring.
    CacheMonitoring,
    /// Container credential guard.
    ContainerCredentialGuard,
    /// Quality-of-service capabilities.
    QoSCapabilities,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A service property query, `{"PropertyTypes": [...]}` (empty members omitted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServicePropertyQuery {
    /// Requested property types; the answer lists one property per type, in the same order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub property_types: Vec<ServicePropertyType>,
}

impl ServicePropertyQuery {
    /// A query for the `Basic` property only.
    pub fn basic() -> Self {
        ServicePropertyQuery {
            property_types: vec![ServicePropertyType::Basic],
        }
    }
}

/// The answer of a service property query: `{"Properties": [...]}`, one raw JSON entry per
/// requested type, in the order of the query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceProperties {
    /// The properties, as raw JSON.
    pub properties: Vec<Value>,
}

impl ServiceProperties {
    /// Decodes the property at `index` as `T`; `None` when there is no such entry.
    pub fn get<T: DeserializeOwned>(&self, index: usize) -> Option<Result<T, serde_json::Error>> {
        self.properties.get(index).map(|v| T::deserialize(v))
    }

    /// Decodes the first property as [`BasicInformation`] (the answer to
    /// [`ServicePropertyQuery::basic`]).
    pub fn basic_information(&self) -> Option<Result<BasicInformation, serde_json::Error>> {
        self.get(0)
    }
}

/// The service's `Basic` property: which schema versions it accepts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BasicInformation {
    /// Supported schema versions.
    pub supported_schema_versions: Vec<SchemaVersion>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BasicInformation {
    /// Whether the service accepts documents of schema `version`: a listed version with the same
    /// major and at least the same minor.
    pub fn supports(&self, version: SchemaVersion) -> bool {
        self.supported_schema_versions
            .iter()
            .any(|v| v.major == version.major && v.minor >= version.minor)
    }

    /// The highest supported schema version, if any is listed.
    pub fn highest(&self) -> Option<SchemaVersion> {
        self.supported_schema_versions.iter().copied().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_answer_shapes() {
        assert_eq!(
            serde_json::to_string(&ServicePropertyQuery::basic()).unwrap(),
            r#"{"PropertyTypes":["Basic"]}"#
        );
        assert_eq!(
            serde_json::to_string(&ServicePropertyQuery::default()).unwrap(),
            "{}"
        );
        let q: ServicePropertyQuery =
            serde_json::from_str(r#"{"PropertyTypes":["Basic","Undefined"]}"#).unwrap();
        assert_eq!(
            q.property_types[1],
            ServicePropertyType::Other("Undefined".into())
        );

        let answer: ServiceProperties = serde_json::from_str(
            r#"{"Properties":[{"SupportedSchemaVersions":[{"Major":1,"Minor":0},{"Major":2,"Minor":1},{"Major":2,"Minor":5}],"Future":true}]}"#,
        )
        .unwrap();
        let basic = answer.basic_information().unwrap().unwrap();
        assert_eq!(basic.supported_schema_versions.len(), 3);
        assert!(basic.supports(SchemaVersion::V2_1));
        assert!(basic.supports(SchemaVersion::new(2, 4)));
        assert!(!basic.supports(SchemaVersion::new(3, 0)));
        assert_eq!(basic.highest(), Some(SchemaVersion::new(2, 5)));
        assert_eq!(basic.extra["Future"], serde_json::json!(true));
        assert!(answer.get::<BasicInformation>(1).is_none());
        assert!(ServiceProperties::default().basic_information().is_none());
    }
}
