//! Which objects a list or watch wants: namespace, label selector, field selector.

use crate::cache::CachedObject;
use crate::error::{ApiError, Result};
use crate::request::{Query, Target};
use ferry_api::selector::{FieldSelector, LabelSelector};

/// A parsed, checked filter.
#[derive(Debug)]
pub struct Filter {
    /// etcd key prefix objects must be under.
    pub prefix: String,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// Build from a target and its query; unknown field selector labels are a 400.
    pub fn new(target: &Target, query: &Query) -> Result<Self> {
        let res = target.res;
        let labels = match &query.label_selector {
            Some(s) => Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
            None => None,
        };
        let fields = match &query.field_selector {
            Some(s) => {
                let sel = FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                if let Some(bad) = sel.fields().find(|f| !res.supports_field(f)) {
                    return Err(ApiError::bad_request(format!("field label not supported: {bad}")));
                }
                Some(sel)
            }
            None => None,
        };
        Ok(Self { prefix: res.namespace_prefix(target.namespace.as_deref()), labels, fields })
    }

    /// Whether an object passes.
    pub fn matches(&self, obj: &CachedObject) -> bool {
        obj.key.starts_with(&self.prefix) && self.matches_selectors(obj)
    }

    fn matches_selectors(&self, obj: &CachedObject) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(&obj.sel.labels) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(&|name: &str| obj.sel.field(name)) {
                return false;
            }
        }
        true
    }
}
