//! Taints and tolerations: the one matching rule the scheduler (filters, scores) and the
//! controllers (taint-based eviction) share.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether `tol` tolerates `taint` (Kubernetes' `ToleratesTaint`): an empty effect matches every
/// effect, an empty key with `Exists` every key; `Equal` (also the empty operator) needs the key
/// and the value to match.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty() && tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}
