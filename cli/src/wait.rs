//! `ferry wait --for=condition=NAME[=VALUE]|delete`: poll objects until the condition holds.

use crate::resolve;
use anyhow::{bail, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum For {
    /// `status.conditions[type=NAME].status == VALUE` (case-insensitive; default `True`).
    Condition { name: String, value: String },
    /// The object is gone.
    Delete,
}

impl std::str::FromStr for For {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "delete" {
            return Ok(For::Delete);
        }
        let Some(rest) = s.strip_prefix("condition=") else {
            bail!("unrecognized --for {s:?}: use condition=NAME[=VALUE] or delete");
        };
        let (name, value) = rest.split_once('=').unwrap_or((rest, "True"));
        if name.is_empty() {
            bail!("--for=condition needs a condition name");
        }
        Ok(For::Condition { name: name.to_string(), value: value.to_string() })
    }
}

/// Whether `obj` (None: absent) satisfies `f`.
pub fn holds(f: &For, obj: Option<&Value>) -> bool {
    match (f, obj) {
        (For::Delete, o) => o.is_none(),
        (For::Condition { .. }, None) => false,
        (For::Condition { name, value }, Some(o)) => {
            o.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
                c["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(name))
                    && c["status"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(value))
            })
        }
    }
}

/// Wait until every named object satisfies the condition; print `kind/name condition met` per object.
pub async fn wait(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    names: &[String],
    f: &str,
    timeout: Duration,
) -> Result<()> {
    let f: For = f.parse()?;
    if names.is_empty() {
        bail!("at least one name is required");
    }
    let resources = resolve::discover(client).await?;
    let r = resolve::by_name(&resources, kind)?;
    let api = r.api(client, Some(namespace));
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let obj = api.get_opt(name).await?;
            if obj.is_none() && f != For::Delete {
                bail!("{}s {name:?} not found", r.kind.to_lowercase());
            }
            let value = obj.map(serde_json::to_value).transpose()?;
            if holds(&f, value.as_ref()) {
                println!("{}/{name} condition met", r.display());
                break;
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for the condition on {}/{name}", r.plural);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions() -> Result<()> {
        let d = json!({"status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        assert!(holds(&"condition=Available".parse()?, Some(&d)));
        assert!(holds(&"condition=available=true".parse()?, Some(&d)));
        assert!(holds(&"condition=Ready=False".parse()?, Some(&d)));
        assert!(!holds(&"condition=Ready".parse()?, Some(&d)));
        assert!(holds(&"delete".parse()?, None));
        assert!("jsonpath={.x}".parse::<For>().is_err());
        Ok(())
    }
}
