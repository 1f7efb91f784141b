#!/usr/bin/env python3
"""Generate api/src/protobuf/table.rs: the protobuf wire schema of the kinds Ferry serves.

Stock clients built on client-go (kubectl create, kubectl run, …) send request bodies as
`application/vnd.kubernetes.protobuf`. Kubernetes' .proto files name every field by its JSON name, so a
table of (message, tag) → (JSON name, type) is all a decoder needs to turn such a body into the JSON the rest
of the API server works on. This script reads the `generated.proto` files of k8s.io/api and
k8s.io/apimachinery and writes that table for the messages reachable from the served kinds.

Usage: python3 scripts/gen-protobuf-schema.py API_REPO APIMACHINERY_REPO [REF]
  API_REPO / APIMACHINERY_REPO: git checkouts (or bare repositories) of kubernetes/api and
  kubernetes/apimachinery; REF defaults to HEAD. Commit the result.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "api", "src", "protobuf", "table.rs")

API_FILES = ["core/v1", "apps/v1", "coordination/v1", "discovery/v1", "events/v1", "scheduling/v1", "autoscaling/v1"]
MACHINERY_FILES = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/util/intstr", "pkg/api/resource"]

# (apiVersion, kind, message)
ROOTS = [
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "Node", "k8s.io.api.core.v1.Node"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("v1", "Endpoints", "k8s.io.api.core.v1.Endpoints"),
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "Event", "k8s.io.api.core.v1.Event"),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount"),
    ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
    ("apps/v1", "ReplicaSet", "k8s.io.api.apps.v1.ReplicaSet"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("coordination.k8s.io/v1", "Lease", "k8s.io.api.coordination.v1.Lease"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io.api.discovery.v1.EndpointSlice"),
    ("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event"),
    ("scheduling.k8s.io/v1", "PriorityClass", "k8s.io.api.scheduling.v1.PriorityClass"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
    ("v1", "DeleteOptions", "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
]

# Messages with a JSON form of their own (apimachinery's custom marshalling).
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Kind::Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "Kind::MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "Kind::RawJson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "Kind::RawJson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Kind::Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "Kind::IntOrString",
}

SCALARS = {
    "string": "Kind::String",
    "bytes": "Kind::Bytes",
    "bool": "Kind::Bool",
    "int32": "Kind::Int32",
    "int64": "Kind::Int64",
}
# Types the served kinds do not use (double, float, uint*, meta.v1.Duration) are not supported by the decoder:
# the script stops with "unknown message" when a new root reaches one, and the decoder needs to learn it.


def read(repo, path, ref):
    return subprocess.check_output(["git", "-C", repo, "show", "%s:%s" % (ref, path)], text=True)


def commit(repo, ref):
    return subprocess.check_output(["git", "-C", repo, "rev-parse", ref], text=True).strip()


def parse(text, messages):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    for name, body in re.findall(r"^message (\w+) \{(.*?)^\}", text, re.M | re.S):
        fields = []
        for m in re.finditer(r"(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)|map<\s*(\w+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)", body):
            if m.group(1):
                fields.append((int(m.group(4)), m.group(3), m.group(1) == "repeated", None, m.group(2)))
            else:
                fields.append((int(m.group(8)), m.group(7), False, m.group(5), m.group(6)))
        messages["%s.%s" % (package, name)] = (package, fields)


def parse_go(text, package, structs):
    """Record, per Go struct field, whether Go's JSON encoding drops its zero value: a non-pointer scalar with
    `omitempty`. The decoder drops such zeros so a protobuf body stores what the same JSON body would."""
    for name, body in re.findall(r"^type (\w+) struct \{(.*?)^\}", text, re.M | re.S):
        fields = {}
        for ty, tag in re.findall(r"^\s+\w+\s+(\S+)\s+`json:\"([^\"]*)\"", body, re.M):
            json_name, _, opts = tag.partition(",")
            if not json_name:
                continue
            scalar = ty in ("string", "bool", "int32", "int64", "types.UID") or (
                not ty.startswith("*") and not ty.startswith("[]") and not ty.startswith("map[")
                and "." not in ty and ty[:1].isupper() and ty not in ("Time", "MicroTime"))
            fields[json_name] = "omitempty" in opts and not ty.startswith("*") and scalar
        structs["%s.%s" % (package, name)] = fields


def qualify(package, ty):
    if ty in SCALARS:
        return ty
    if ty.startswith("."):
        return ty[1:]
    return "%s.%s" % (package, ty)


def package_of(proto):
    return re.search(r"^package ([\w.]+);", proto, re.M).group(1)


def ident(name):
    return "M_" + re.sub(r"[^A-Za-z0-9]", "_", name.replace("k8s.io.", "")).upper()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    api, machinery = sys.argv[1], sys.argv[2]
    ref = sys.argv[3] if len(sys.argv) > 3 else "HEAD"
    messages, structs = {}, {}
    for d in API_FILES:
        text = read(api, d + "/generated.proto", ref)
        parse(text, messages)
        parse_go(read(api, d + "/types.go", ref), package_of(text), structs)
    for d in MACHINERY_FILES:
        text = read(machinery, d + "/generated.proto", ref)
        parse(text, messages)
        if d == "pkg/apis/meta/v1":
            parse_go(read(machinery, d + "/types.go", ref), package_of(text), structs)

    order, seen = [], set()

    def kind_of(package, ty):
        q = qualify(package, ty)
        if q in SCALARS:
            return SCALARS[q]
        if q in SPECIAL:
            return SPECIAL[q]
        if q not in messages:
            sys.exit("unknown message " + q)
        visit(q)
        return "Kind::Message(&%s)" % ident(q)

    def visit(q):
        if q in seen:
            return
        seen.add(q)
        order.append(q)
        package, fields = messages[q]
        go = structs.get(q, {})
        rendered = []
        for tag, name, repeated, map_key, ty in sorted(fields):
            value = kind_of(package, ty)
            if map_key is not None:
                if map_key != "string":
                    sys.exit("map with %s keys in %s" % (map_key, q))
                shape = "Shape::Map"
            elif repeated:
                shape = "Shape::Repeated"
            else:
                shape = "Shape::Single"
            omit = "true" if go.get(name, False) and shape == "Shape::Single" else "false"
            rendered.append('Field { tag: %d, name: "%s", shape: %s, kind: %s, omit_zero: %s }' % (
                tag, name, shape, value, omit))
        messages[q] = (package, rendered)

    for _, _, m in ROOTS:
        visit(m)

    out = [
        "// @generated by scripts/gen-protobuf-schema.py from kubernetes/api %s and kubernetes/apimachinery %s."
        % (commit(api, ref)[:12], commit(machinery, ref)[:12]),
        "// Do not edit by hand.",
        "//! Protobuf field tables of the served kinds: tag → JSON name and type.",
        "",
        "use super::{Field, Kind, Message, Shape};",
        "",
    ]
    for q in sorted(order):
        _, rendered = messages[q]
        out.append("pub(super) static %s: Message = Message {" % ident(q))
        out.append('    name: "%s",' % q)
        out.append("    fields: &[")
        for r in rendered:
            out.append("        %s," % r)
        out.append("    ],")
        out.append("};")
        out.append("")
    out.append("/// The message of each kind a request body may carry, by `(apiVersion, kind)`.")
    out.append("pub(super) static ROOTS: &[(&str, &str, &Message)] = &[")
    for v, k, m in ROOTS:
        out.append('    ("%s", "%s", &%s),' % (v, k, ident(m)))
    out.append("];")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(out) + "\n")
    subprocess.check_call(["rustfmt", "--edition", "2021", "--config-path", os.path.join(ROOT, "rustfmt.toml"), OUT])
    print("wrote %s: %d messages" % (os.path.relpath(OUT, ROOT), len(order)))


if __name__ == "__main__":
    main()
