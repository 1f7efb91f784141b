//! Field-level validation errors, shaped like Kubernetes' `field.Error`.

use std::fmt;

/// The kind of a field error; its string form is the `reason` of a Status cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseType {
    /// A required field is missing.
    Required,
    /// A value is malformed or out of range.
    Invalid,
    /// A value is not one of the supported values.
    NotSupported,
    /// A value appears twice where it must be unique.
    Duplicate,
    /// A field may not be set or changed.
    Forbidden,
    /// A value is longer than allowed.
    TooLong,
    /// A list has more items than allowed.
    TooMany,
    /// The server could not process the field (e.g. an allocation range is full).
    Internal,
}

impl CauseType {
    /// The `reason` string Kubernetes uses in `details.causes[]`.
    pub fn reason(self) -> &'static str {
        match self {
            CauseType::Required => "FieldValueRequired",
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::Internal => "InternalError",
        }
    }
}

/// One problem with one field, e.g. `spec.replicas: Invalid value: -1: must be greater than or
/// equal to 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What went wrong.
    pub cause: CauseType,
    /// Dotted path of the field, with list indices in brackets: `spec.containers[0].image`.
    pub field: String,
    /// The offending value as Kubernetes prints it (strings quoted), when it has one.
    pub value: Option<String>,
    /// Human explanation, e.g. `must be greater than or equal to 0`.
    pub detail: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { cause: CauseType::Required, field: field.into(), value: None, detail: detail.into() }
    }

    /// A value is invalid; `value` is rendered the way Go's `%#v` would for strings (quoted).
    pub fn invalid(field: impl Into<String>, value: impl fmt::Debug, detail: impl Into<String>) -> Self {
        Self {
            cause: CauseType::Invalid,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: detail.into(),
        }
    }

    /// A value is not among `supported`.
    pub fn not_supported(field: impl Into<String>, value: impl fmt::Debug, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            cause: CauseType::NotSupported,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// A value is duplicated.
    pub fn duplicate(field: impl Into<String>, value: impl fmt::Debug) -> Self {
        Self {
            cause: CauseType::Duplicate,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: String::new(),
        }
    }

    /// A field may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { cause: CauseType::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }

    /// The server could not process the field: `spec.clusterIPs: Internal error: … range is full`.
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { cause: CauseType::Internal, field: field.into(), value: None, detail: detail.into() }
    }

    /// A list has more items than allowed: `Too many: 1001: must have at most 1000 items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self {
            cause: CauseType::TooMany,
            field: field.into(),
            value: Some(actual.to_string()),
            detail: format!("must have at most {max} items"),
        }
    }

    /// A value is too long.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            cause: CauseType::TooLong,
            field: field.into(),
            value: None,
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// The message without the field path, as used for `details.causes[].message`.
    pub fn message(&self) -> String {
        let head = match self.cause {
            CauseType::Required => "Required value",
            CauseType::Invalid => "Invalid value",
            CauseType::NotSupported => "Unsupported value",
            CauseType::Duplicate => "Duplicate value",
            CauseType::Forbidden => "Forbidden",
            CauseType::TooLong => "Too long",
            CauseType::TooMany => "Too many",
            CauseType::Internal => "Internal error",
        };
        let mut out = head.to_string();
        if let Some(v) = &self.value {
            out.push_str(": ");
            out.push_str(v);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kubernetes() {
        let e = FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0");
        assert_eq!(e.to_string(), "spec.replicas: Invalid value: -1: must be greater than or equal to 0");
        let e = FieldError::required("spec.containers[0].image", "");
        assert_eq!(e.to_string(), "spec.containers[0].image: Required value");
        let e = FieldError::not_supported("spec.restartPolicy", "Sometimes", &["Always", "Never"]);
        assert_eq!(
            e.to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""
        );
    }
}
