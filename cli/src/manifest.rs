//! Reading manifests: files, directories (`-R` to recurse) or `-`, multi-document YAML or JSON, with
//! errors that name the file, the document and the line.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The object.
    pub object: Value,
    /// `file` or `-`, for messages.
    pub source: String,
    /// 1-based document number in its file.
    pub index: usize,
}

/// Read every object in `paths` (files, directories, `-` for stdin).
pub fn read_all(paths: &[PathBuf], recursive: bool) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
            docs.extend(parse("-", &text)?);
        } else if p.is_dir() {
            for f in files_in(p, recursive)? {
                let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
                docs.extend(parse(&f.display().to_string(), &text)?);
            }
        } else {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            docs.extend(parse(&p.display().to_string(), &text)?);
        }
    }
    if docs.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(docs)
}

/// Manifest files in a directory (`.yaml`, `.yml`, `.json`), sorted; subdirectories with `recursive`.
fn files_in(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                out.extend(files_in(&p, true)?);
            }
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(p);
        }
    }
    Ok(out)
}

/// Split and parse one file's documents. `kind: List` documents contribute their items.
pub fn parse(source: &str, text: &str) -> Result<Vec<Doc>> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = match Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map(|l| format!(" line {} column {}", l.line(), l.column())).unwrap_or_default();
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                bail!("{source}: document {index}:{at}: {msg}");
            }
        };
        match value {
            Value::Null => continue,
            Value::Object(ref m) if m.is_empty() => continue,
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) => {
                for item in m.get("items").and_then(Value::as_array).into_iter().flatten() {
                    out.push(Doc { object: item.clone(), source: source.to_string(), index });
                }
            }
            Value::Object(_) => out.push(Doc { object: value, source: source.to_string(), index }),
            _ => bail!("{source}: document {index}: not an object"),
        }
    }
    for d in &out {
        for field in ["apiVersion", "kind"] {
            if d.object.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                bail!("{}: document {}: {field} is not set", d.source, d.index);
            }
        }
        if d.object.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty) {
            bail!("{}: document {}: metadata.name is not set", d.source, d.index);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_errors() -> Result<()> {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"s\"}}]}\n";
        let docs = parse("m.yaml", text)?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].object["kind"], "Secret");
        let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [unclosed\n";
        let e = parse("m.yaml", bad).expect_err("syntax error").to_string();
        assert!(e.starts_with("m.yaml: document 2: line "), "{e}");
        let e = parse("m.yaml", "apiVersion: v1\nmetadata: {name: a}\n").expect_err("no kind").to_string();
        assert_eq!(e, "m.yaml: document 1: kind is not set");
        Ok(())
    }
}
