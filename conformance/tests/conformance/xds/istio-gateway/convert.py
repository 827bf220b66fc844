#!/usr/bin/env python3
"""Converts the recorded Istio ingress gateway's config dump into what the ADS server sends.

    convert.py [CONFIG_DUMP.json]

With a config dump (Envoy's /config_dump, as `istioctl proxy-config all -o json` saves it),
first writes `resources.json`: its dynamic listeners, route configurations and clusters,
unchanged, in the order of the dump. Then encodes `resources.json` as protobuf, one
`envoy.service.discovery.v3.DiscoveryResponse` per type (`lds.pb`, `rds.pb`, `cds.pb`, each
with the resources as `Any` and the recorded `version_info`), with the message descriptors
envoy-types ships (`src/generated/types.bin`, the crate the ADS server is built with).

A typed config whose type is not in Envoy's API (Istio's own `istio.alpn` and `istio.stats`
filter configs) cannot be encoded without its schema: its `Any` keeps the type URL with an
empty value, and the script names each such type. Needs `pip install protobuf`.
"""

import glob
import json
import os
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = [
    ("lds", "type.googleapis.com/envoy.config.listener.v3.Listener"),
    ("rds", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"),
    ("cds", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
]


def extract(dump_path):
    """The dump's dynamic resources, by kind, with the version each was recorded at."""
    with open(dump_path) as f:
        dump = json.load(f)
    out = {"lds": [], "rds": [], "cds": []}
    for config in dump["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            for l in config.get("dynamic_listeners", []):
                state = l.get("active_state")
                if state:
                    out["lds"].append({"version_info": state["version_info"], "resource": state["listener"]})
        elif kind == "RoutesConfigDump":
            for r in config.get("dynamic_route_configs", []):
                out["rds"].append({"version_info": r["version_info"], "resource": r["route_config"]})
        elif kind == "ClustersConfigDump":
            for c in config.get("dynamic_active_clusters", []):
                out["cds"].append({"version_info": c["version_info"], "resource": c["cluster"]})
    return out


def pool():
    """Envoy's messages, from the descriptor set envoy-types ships."""
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(os.path.join(home, "registry/src/*/envoy-types-*/src/generated/types.bin")))
    if not found:
        sys.exit("envoy-types' types.bin not found under $CARGO_HOME/registry: run a cargo build first")
    fds = descriptor_pb2.FileDescriptorSet()
    with open(found[-1], "rb") as f:
        fds.ParseFromString(f.read())
    p = descriptor_pool.DescriptorPool()
    for file in fds.file:
        p.Add(file)
    # cncf/xds' udpa/type/v1/typed_struct.proto, which istiod wraps Istio's own filter
    # configs in; envoy-types does not ship it.
    typed_struct = descriptor_pb2.FileDescriptorProto(
        name="udpa/type/v1/typed_struct.proto",
        package="udpa.type.v1",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    m = typed_struct.message_type.add(name="TypedStruct")
    m.field.add(name="type_url", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, json_name="typeUrl")
    m.field.add(
        name="value", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".google.protobuf.Struct", json_name="value",
    )
    p.Add(typed_struct)
    return p, os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(found[-1]))))


def known(p, type_url):
    try:
        p.FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
        return True
    except KeyError:
        return False


def declare_empty(p, type_url):
    """Adds `type_url`'s message to the pool as one without fields: its `Any` encodes as the
    type URL with an empty value."""
    package, _, name = type_url.rsplit("/", 1)[-1].rpartition(".")
    file = descriptor_pb2.FileDescriptorProto(
        name=f"unknown/{package}/{name}.proto", package=package, syntax="proto3"
    )
    file.message_type.add(name=name)
    p.Add(file)


def strip_unknown(p, value, unknown):
    """`value` with every typed config of a type outside the pool reduced to its type URL."""
    if isinstance(value, dict):
        t = value.get("@type")
        if t is not None and (t in unknown or not known(p, t)):
            if t not in unknown:
                unknown.add(t)
                declare_empty(p, t)
            return {"@type": t}
        return {k: strip_unknown(p, v, unknown) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_unknown(p, v, unknown) for v in value]
    return value


def main():
    if len(sys.argv) > 1:
        with open(os.path.join(HERE, "resources.json"), "w") as f:
            json.dump(extract(sys.argv[1]), f, indent=1)
            f.write("\n")
    with open(os.path.join(HERE, "resources.json")) as f:
        resources = json.load(f)
    p, crate = pool()
    response_class = message_factory.GetMessageClass(
        p.FindMessageTypeByName("envoy.service.discovery.v3.DiscoveryResponse")
    )
    unknown = set()
    for kind, type_url in KINDS:
        entries = resources[kind]
        response = response_class(type_url=type_url, version_info=entries[0]["version_info"] if entries else "")
        for entry in entries:
            body = strip_unknown(p, entry["resource"], unknown)
            assert body["@type"] == type_url, body["@type"]
            any_json = {"@type": type_url, **{k: v for k, v in body.items() if k != "@type"}}
            json_format.ParseDict(any_json, response.resources.add(), descriptor_pool=p)
        with open(os.path.join(HERE, f"{kind}.pb"), "wb") as f:
            f.write(response.SerializeToString(deterministic=True))
        print(f"{kind}.pb: {len(entries)} resources")
    print(f"descriptors: {crate}")
    for t in sorted(unknown):
        print(f"not in Envoy's API, sent with an empty value: {t}")


if __name__ == "__main__":
    main()
