//! Label and field selectors.

/// Why a selector string could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);
