//! `ferry get`: the server's Table columns (as kubectl shows them), or the objects as YAML, JSON or names.

use crate::resolve::{self, Resource};
use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// kubectl's wide table (extra columns).
    Wide,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// `kind.group/name` per object.
    Name,
}

/// What to list.
pub struct Query<'a> {
    /// The type as typed: `po`, `deployments.apps`.
    pub kind: &'a str,
    /// Names (empty: all).
    pub names: &'a [String],
    /// Namespace, or None for all namespaces (`-A`).
    pub namespace: Option<&'a str>,
    /// `-l`.
    pub selector: Option<&'a str>,
    /// `--field-selector`.
    pub field_selector: Option<&'a str>,
}

fn path(r: &Resource, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p =
        if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
    if let (true, Some(ns)) = (r.namespaced, ns) {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(&r.plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

fn query_string(q: &Query<'_>) -> String {
    let mut params: Vec<String> = Vec::new();
    if let Some(s) = q.selector {
        params.push(format!("labelSelector={}", encode(s)));
    }
    if let Some(s) = q.field_selector {
        params.push(format!("fieldSelector={}", encode(s)));
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn request(client: &kube::Client, path: &str, accept: &str) -> Result<Value> {
    let req = http::Request::get(path).header(http::header::ACCEPT, accept).body(Vec::new())?;
    let text = client.request_text(req).await?;
    serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";

/// Run `get` and print the result.
pub async fn get(client: &kube::Client, q: &Query<'_>, output: Option<Output>) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolve::by_name(&resources, q.kind)?;
    let targets: Vec<Option<&str>> =
        if q.names.is_empty() { vec![None] } else { q.names.iter().map(|n| Some(n.as_str())).collect() };
    match output {
        None | Some(Output::Wide) => {
            let mut tables = Vec::new();
            for name in &targets {
                let p = format!("{}{}", path(r, q.namespace, *name), query_string(q));
                tables.push(request(client, &p, TABLE).await?);
            }
            print_tables(&tables, output == Some(Output::Wide), q.namespace.is_none() && r.namespaced, q, r);
        }
        Some(out) => {
            let mut items = Vec::new();
            for name in &targets {
                let p = format!("{}{}", path(r, q.namespace, *name), query_string(q));
                let v = request(client, &p, "application/json").await?;
                match name {
                    Some(_) => items.push(v),
                    None => {
                        items.extend(v["items"].as_array().cloned().unwrap_or_default().into_iter().map(|mut i| {
                            // List items carry no apiVersion/kind; objects printed alone do.
                            i["apiVersion"] = Value::String(r.api_version());
                            i["kind"] = Value::String(r.kind.clone());
                            i
                        }))
                    }
                }
            }
            let single = q.names.len() == 1;
            match out {
                Output::Name => {
                    for i in &items {
                        println!(
                            "{}/{}",
                            r.display(),
                            i.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
                        );
                    }
                }
                Output::Json | Output::Yaml => {
                    let doc = if single {
                        items.into_iter().next().unwrap_or(Value::Null)
                    } else {
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
                    };
                    if out == Output::Json {
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    } else {
                        print!("{}", serde_yaml::to_string(&doc)?);
                    }
                }
                Output::Wide => bail!("unreachable output"),
            }
        }
    }
    Ok(())
}

fn print_tables(tables: &[Value], wide: bool, all_namespaces: bool, q: &Query<'_>, r: &Resource) {
    let Some(first) = tables.first() else { return };
    let columns: Vec<(usize, String)> = first["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or_default().to_uppercase()))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for t in tables {
        for row in t["rows"].as_array().into_iter().flatten() {
            let cells = row["cells"].as_array().cloned().unwrap_or_default();
            let mut line: Vec<String> = Vec::new();
            if all_namespaces {
                line.push(
                    row.pointer("/object/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string(),
                );
            }
            for (i, _) in &columns {
                line.push(match cells.get(*i) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => "<none>".into(),
                    Some(v) => v.to_string(),
                });
            }
            rows.push(line);
        }
    }
    if rows.is_empty() {
        match q.namespace {
            Some(ns) if r.namespaced => eprintln!("No resources found in {ns} namespace."),
            _ => eprintln!("No resources found"),
        }
        return;
    }
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(columns.into_iter().map(|(_, n)| n));
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(rows.iter()) {
        let mut out = String::new();
        for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
            if i + 1 == line.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = w));
            }
        }
        println!("{}", out.trim_end());
    }
}
