//! `ferry get`: the server's Table columns (as kubectl shows them), or the objects as YAML, JSON or names.

use crate::resolve::{self, Resource};
use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Output formats of `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// kubectl's wide table (extra columns).
    Wide,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// `kind.group/name` per object.
    Name,
    /// A kubectl JSONPath template, e.g. `{.metadata.name}{"\n"}`.
    JsonPath(String),
}

impl std::str::FromStr for Output {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "wide" => Output::Wide,
            "yaml" => Output::Yaml,
            "json" => Output::Json,
            "name" => Output::Name,
            _ => match s.strip_prefix("jsonpath=") {
                Some(t) => Output::JsonPath(t.to_string()),
                None => return Err(format!("unknown output format {s:?}: use wide, yaml, json, name or jsonpath=…")),
            },
        })
    }
}

/// Render a kubectl JSONPath template (`{.a.b}`, `{.items[*].metadata.name}`, `{"\n"}` and literal text;
/// several results are joined with spaces) against `v`.
pub fn jsonpath(template: &str, v: &Value) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).with_context(|| format!("unclosed {{ in {template:?}"))?;
        let expr = rest[start + 1..end].trim();
        rest = &rest[end + 1..];
        if let Some(lit) = expr.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            out.push_str(&lit.replace("\\n", "\n").replace("\\t", "\t"));
            continue;
        }
        if expr.starts_with("range") || expr == "end" {
            bail!("jsonpath range/end is not supported; use {{.items[*].field}}");
        }
        let path = if expr.starts_with('$') { expr.to_string() } else { format!("${}", expr) };
        let query =
            serde_json_path::JsonPath::parse(&path).map_err(|e| anyhow::anyhow!("invalid jsonpath {expr:?}: {e}"))?;
        let found: Vec<String> = query
            .query(v)
            .all()
            .into_iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&found.join(" "));
    }
    out.push_str(rest);
    Ok(out)
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

/// A query parameter value, URL-encoded.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn request(client: &kube::Client, path: &str, accept: &str) -> Result<Value> {
    let req = http::Request::get(path).header(http::header::ACCEPT, accept).body(Vec::new())?;
    let text = client.request_text(req).await?;
    serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";

/// Run `get` and print the result; with `watch`, then print every change (as table rows, or objects).
pub async fn get(client: &kube::Client, q: &Query<'_>, output: Option<Output>, watch: bool) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolve::by_name(&resources, q.kind)?;
    let targets: Vec<Option<&str>> =
        if q.names.is_empty() { vec![None] } else { q.names.iter().map(|n| Some(n.as_str())).collect() };
    let wide = output == Some(Output::Wide);
    match &output {
        None | Some(Output::Wide) => {
            let mut tables = Vec::new();
            for name in &targets {
                let p = format!("{}{}", path(r, q.namespace, *name), query_string(q));
                tables.push(request(client, &p, TABLE).await?);
            }
            let widths = print_tables(&tables, wide, q.namespace.is_none() && r.namespaced, q, r);
            if watch {
                let rv = tables.first().and_then(|t| t.pointer("/metadata/resourceVersion")).and_then(Value::as_str);
                let mut p = format!("{}{}", path(r, q.namespace, None), query_string(q));
                p.push_str(if p.contains('?') { "&" } else { "?" });
                p.push_str(&format!("watch=true&resourceVersion={}", rv.unwrap_or("0")));
                if let [Some(name)] = targets.as_slice() {
                    p.push_str(&format!("&fieldSelector=metadata.name%3D{}", encode(name)));
                }
                follow(client, &p, wide, q.namespace.is_none() && r.namespaced, widths).await?;
            }
            return Ok(());
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
            match out.clone() {
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
                    if *out == Output::Json {
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    } else {
                        print!("{}", serde_yaml::to_string(&doc)?);
                    }
                }
                Output::JsonPath(t) => {
                    let doc = if single {
                        items.into_iter().next().unwrap_or(Value::Null)
                    } else {
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
                    };
                    print!("{}", jsonpath(&t, &doc)?);
                }
                Output::Wide => bail!("unreachable output"),
            }
        }
    }
    Ok(())
}

/// Table rows of a watch, aligned with the first table's columns as far as they fit.
async fn follow(client: &kube::Client, path: &str, wide: bool, all_namespaces: bool, widths: Vec<usize>) -> Result<()> {
    use futures::{AsyncBufReadExt, TryStreamExt};
    let req = http::Request::get(path).header(http::header::ACCEPT, TABLE).body(Vec::new())?;
    let mut lines = client.request_stream(req).await?.lines();
    while let Some(line) = lines.try_next().await? {
        let event: Value = serde_json::from_str(&line).context("a watch event is not JSON")?;
        if event["type"] == "ERROR" {
            bail!("the watch ended: {}", event.pointer("/object/message").and_then(Value::as_str).unwrap_or("error"));
        }
        if event["type"] == "BOOKMARK" {
            continue;
        }
        let (_, rows) = table_rows(&event["object"], wide, all_namespaces);
        for row in rows {
            print_row(&row, &widths);
        }
    }
    Ok(())
}

/// Header and rows of a Table (with a NAMESPACE column first for all namespaces).
fn table_rows(table: &Value, wide: bool, all_namespaces: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or_default().to_uppercase()))
        .collect();
    let mut rows = Vec::new();
    for row in table["rows"].as_array().into_iter().flatten() {
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
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(columns.into_iter().map(|(_, n)| n));
    (header, rows)
}

fn print_row(line: &[String], widths: &[usize]) {
    println!("{}", crate::columns::row(line, widths, 3));
}

/// Print tables as kubectl does; returns the column widths used.
fn print_tables(tables: &[Value], wide: bool, all_namespaces: bool, q: &Query<'_>, r: &Resource) -> Vec<usize> {
    let Some(first) = tables.first() else { return Vec::new() };
    let (header, _) = table_rows(first, wide, all_namespaces);
    let rows: Vec<Vec<String>> = tables.iter().flat_map(|t| table_rows(t, wide, all_namespaces).1).collect();
    if rows.is_empty() {
        match q.namespace {
            Some(ns) if r.namespaced => eprintln!("No resources found in {ns} namespace."),
            _ => eprintln!("No resources found"),
        }
        return header.iter().map(String::len).collect();
    }
    let widths = crate::columns::widths(std::iter::once(&header).chain(rows.iter()).map(Vec::as_slice));
    for line in std::iter::once(&header).chain(rows.iter()) {
        print_row(line, &widths);
    }
    widths
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonpath_templates() -> Result<()> {
        let v = json!({"metadata": {"name": "web"}, "items": [{"n": 1}, {"n": 2}], "spec": {"replicas": 3}});
        assert_eq!(jsonpath("{.metadata.name}", &v)?, "web");
        assert_eq!(jsonpath("{.items[*].n}{\"\\n\"}", &v)?, "1 2\n");
        assert_eq!(jsonpath("replicas={.spec.replicas}", &v)?, "replicas=3");
        assert!(jsonpath("{.metadata.name", &v).is_err());
        assert!(jsonpath("{range .items[*]}{end}", &v).is_err());
        Ok(())
    }
}
