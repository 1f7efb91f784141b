#!/usr/bin/env python3
"""Generate api/src/managed/schema_table.rs: the server-side-apply schema of the kinds Ferry serves.

Server-side apply needs, for every field, how it merges: a struct (fields owned one by one), a map (granular
or atomic), a list (atomic, a set of scalars, or a map keyed by some fields of its items), or an atomic value.
Kubernetes publishes this as the OpenAPI extensions x-kubernetes-list-type / -list-map-keys / -map-type, and
the k8s-openapi crate compiles them into its `DeepMerge` impls (`merge_strategies::list::map(..., &[|lhs, rhs|
lhs.name == rhs.name], ...)` and so on). This script reads those generated sources of the k8s-openapi version
in Cargo.lock, so the table follows the crate Ferry already builds on. Upstream facts k8s-openapi drops are
listed in OVERRIDES below, each with its source.

Run: python3 scripts/gen-ssa-schema.py  (needs cargo; writes the file; commit the result)
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "api", "src", "managed", "schema_table.rs")
VERSION_MODULE = "v1_37"

# The root kinds served by Ferry, as k8s-openapi paths.
ROOTS = [
    "api::core::v1::Namespace",
    "api::core::v1::Node",
    "api::core::v1::Pod",
    "api::core::v1::Service",
    "api::core::v1::Endpoints",
    "api::core::v1::ConfigMap",
    "api::core::v1::Secret",
    "api::core::v1::Event",
    "api::core::v1::ServiceAccount",
    "api::apps::v1::ReplicaSet",
    "api::apps::v1::Deployment",
    "api::coordination::v1::Lease",
    "api::discovery::v1::EndpointSlice",
    "api::events::v1::Event",
    "api::scheduling::v1::PriorityClass",
    "api::autoscaling::v1::Scale",
]

# Upstream list-map keys k8s-openapi leaves out because they are optional with a default
# (structured-merge-diff fills a missing key field from its default).
# k8s.io/api core/v1 types.go: Container.Ports `+listMapKey=containerPort +listMapKey=protocol`,
# ServiceSpec.Ports `+listMapKey=port +listMapKey=protocol`; both default protocol to "TCP".
EXTRA_KEYS = {
    ("api::core::v1::Container", "ports"): [("protocol", "TCP")],
    ("api::core::v1::EphemeralContainer", "ports"): [("protocol", "TCP")],
    ("api::core::v1::ServiceSpec", "ports"): [("protocol", "TCP")],
    # PodSpec.TopologySpreadConstraints `+listMapKey=topologyKey +listMapKey=whenUnsatisfiable`.
    ("api::core::v1::PodSpec", "topologySpreadConstraints"): [("when_unsatisfiable", None)],
}

# Structs marked `+structType=atomic` upstream (OpenAPI `x-kubernetes-map-type: atomic` on the definition),
# which k8s-openapi merges field by field. k8s.io/apimachinery meta/v1 types.go (LabelSelector, OwnerReference
# is granular), k8s.io/api core/v1 types.go.
ATOMIC_STRUCTS = {
    "apimachinery::pkg::apis::meta::v1::LabelSelector",
    "apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement",
    "api::core::v1::ObjectReference",
    "api::core::v1::LocalObjectReference",
    "api::core::v1::TypedLocalObjectReference",
    "api::core::v1::ConfigMapKeySelector",
    "api::core::v1::SecretKeySelector",
    "api::core::v1::ObjectFieldSelector",
    "api::core::v1::ResourceFieldSelector",
    "api::core::v1::FileKeySelector",
    "api::core::v1::NodeSelector",
    "api::core::v1::NodeSelectorRequirement",
    "api::core::v1::NodeSelectorTerm",
    "api::core::v1::TopologySelectorTerm",
    "api::core::v1::ConfigMapEnvSource",
    "api::core::v1::SecretEnvSource",
    "api::core::v1::SecretReference",
    "api::core::v1::SecretProjection",
    "api::core::v1::ConfigMapProjection",
}

SCALARS = {
    "bool", "i32", "i64", "f64", "std::string::String", "crate::ByteString",
    "crate::apimachinery::pkg::util::intstr::IntOrString",
    "crate::apimachinery::pkg::api::resource::Quantity",
    "crate::apimachinery::pkg::apis::meta::v1::Time",
    "crate::apimachinery::pkg::apis::meta::v1::MicroTime",
    "crate::apimachinery::pkg::apis::meta::v1::FieldsV1",
    "crate::apimachinery::pkg::runtime::RawExtension",
    "crate::serde_json::Value",
    "serde_json::Value",
}


def crate_src():
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=ROOT))
    for p in meta["packages"]:
        if p["name"] == "k8s-openapi":
            return os.path.join(os.path.dirname(p["manifest_path"]), "src", VERSION_MODULE), p["version"]
    sys.exit("k8s-openapi not found in cargo metadata")


def file_of(src, path):
    parts = path.split("::")
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", parts[-1])
    snake = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", snake).lower()
    return os.path.join(src, *parts[:-1], snake + ".rs")


def strip_opt(t):
    t = t.strip()
    m = re.fullmatch(r"Option<(.*)>", t)
    return m.group(1) if m else t


class Parser:
    def __init__(self, src):
        self.src = src
        self.types = {}  # path -> [(json, kind)]
        self.order = []

    def parse(self, path):
        if path in self.types:
            return
        self.types[path] = None
        fname = file_of(self.src, path)
        text = open(fname).read()
        name = path.split("::")[-1]
        m = re.search(r"pub struct %s \{(.*?)\n\}" % name, text, re.S)
        if not m:
            sys.exit("no struct %s in %s" % (name, fname))
        rust_fields = re.findall(r"^\s+pub (\w+): (.+),$", m.group(1), re.M)
        json_names = dict((rust, js) for js, rust in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text))
        merge = re.search(r"impl crate::DeepMerge for %s \{(.*?)\n\}" % name, text, re.S).group(1)
        fields = []
        for rust, ty in rust_fields:
            js = json_names.get(rust)
            if js is None:
                sys.exit("no JSON name for %s.%s" % (path, rust))
            if js in ("apiVersion", "kind"):
                continue
            fields.append((js, self.kind(path, rust, js, strip_opt(ty), merge)))
        if path in ROOTS:
            fields += [("apiVersion", "Ty::Atomic"), ("kind", "Ty::Atomic")]
        fields.sort()
        self.types[path] = fields
        self.order.append(path)

    def elem(self, ty):
        ty = ty.strip()
        if ty in SCALARS:
            return "Ty::Atomic"
        if ty.startswith("std::vec::Vec<") or ty.startswith("std::collections::BTreeMap<"):
            return "Ty::Atomic"  # nested collections (maps of lists) are atomic values here
        if ty.startswith("crate::"):
            p = ty[len("crate::"):]
            if p in ATOMIC_STRUCTS:
                return "Ty::Atomic"
            self.parse(p)
            return "Ty::Struct(&%s)" % ident(p)
        sys.exit("unknown type " + ty)

    def kind(self, owner, rust, js, ty, merge):
        strat = re.search(r"merge_strategies::(\w+)::(\w+)\(\s*&mut self\.%s,\s*other\.%s(.*?)\);\n" % (rust, rust),
                          merge, re.S)
        if ty.startswith("std::vec::Vec<"):
            inner = ty[len("std::vec::Vec<"):-1]
            if not strat or strat.group(2) == "atomic":
                return "Ty::Atomic"
            if strat.group(2) == "set":
                return "Ty::Set"
            if strat.group(2) == "map":
                keys = [(camel_from(k), None) for k in re.findall(r"\|lhs, rhs\| lhs\.(\w+) == rhs\.\1", strat.group(3))]
                keys += EXTRA_KEYS.get((owner, js), [])
                el = self.elem(inner)
                if not inner.startswith("crate::"):
                    sys.exit("map list of non-struct at %s.%s" % (owner, js))
                # key field JSON names come from the item type
                item = inner[len("crate::"):]
                names = {r: j for j, r in re.findall(r'"([^"]+)" => Field::Key_(\w+),', open(file_of(self.src, item)).read())}
                key_lits = []
                for k, default in keys:
                    jk = names.get(k, k)
                    d = "None" if default is None else "Some(%s)" % json.dumps(json.dumps(default))
                    key_lits.append('Key { name: "%s", default: %s }' % (jk, d))
                return "Ty::MapList(&[%s], &%s)" % (", ".join(key_lits), el)
            sys.exit("unknown list strategy at %s.%s" % (owner, js))
        if ty.startswith("std::collections::BTreeMap<"):
            inner = ty[len("std::collections::BTreeMap<std::string::String, "):-1]
            if strat and strat.group(2) == "atomic":
                return "Ty::Atomic"
            return "Ty::Map(&%s)" % self.elem(inner)
        return self.elem(ty)


def camel_from(snake):
    # Used only as a fallback key; the item's own Field table normally maps it.
    return snake


def ident(path):
    return "T_" + path.replace("::", "_").upper()


def main():
    src, version = crate_src()
    p = Parser(src)
    for r in ROOTS:
        p.parse(r)
    out = [
        "// @generated by scripts/gen-ssa-schema.py from k8s-openapi %s (%s). Do not edit by hand." % (
            version, VERSION_MODULE),
        "//! How each field of the served kinds merges under server-side apply.",
        "",
        "use super::schema::{Key, Struct, Ty};",
        "",
    ]
    for path in sorted(p.order):
        fields = p.types[path]
        out.append("pub(super) static %s: Struct = Struct {" % ident(path))
        out.append('    name: "%s",' % path.split("::")[-1])
        out.append("    fields: &[")
        for js, kind in fields:
            out.append('        ("%s", %s),' % (js, kind))
        out.append("    ],")
        out.append("};")
        out.append("")
    out.append("/// The root struct of each served kind, by `(apiVersion, kind)`.")
    out.append("pub(super) static ROOTS: &[(&str, &str, &Struct)] = &[")
    for r in ROOTS:
        parts = r.split("::")
        group, ver, kind = parts[1], parts[2], parts[3]
        gv = ver if group == "core" else "%s.k8s.io/%s" % (group, ver) if group in (
            "coordination", "discovery", "events", "scheduling") else "%s/%s" % (group, ver)
        out.append('    ("%s", "%s", &%s),' % (gv, kind, ident(r)))
    out.append("];")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(out) + "\n")
    subprocess.check_call(["rustfmt", "--edition", "2021", "--config-path", os.path.join(ROOT, "rustfmt.toml"), OUT])
    print("wrote %s: %d types" % (os.path.relpath(OUT, ROOT), len(p.order)))


if __name__ == "__main__":
    main()
