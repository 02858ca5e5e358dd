"""fnctl layer: publish, list, inspect and delete layer versions
(runtime.v1.Layers). Functions use them with ``fnctl deploy --layer NAME:VERSION``.

    fnctl layer publish NAME ZIP|DIR [--description TEXT]   the next version of NAME
    fnctl layer list [NAME]                                 every version (of NAME)
    fnctl layer get NAME:VERSION
    fnctl layer delete NAME:VERSION                         refused while a function uses it

Exit codes as every fnctl command: 0 success, 2 usage or API error, 3 agent
unreachable.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from runtime.cli.fnctl import CHUNK_SIZE, UsageError, _iso, _output, _table, load_code


def _ref(text: str) -> tuple[str, int]:
    name, sep, version = text.rpartition(":")
    if not sep or not name or not version.isascii() or not version.isdigit():
        raise UsageError(f"{text!r}: expected NAME:VERSION, e.g. numpy:2")
    return name, int(version)


def _layer_dict(lv) -> dict:
    return {"name": lv.name, "version": lv.version, "ref": f"{lv.name}:{lv.version}",
            "description": lv.description, "content_sha256": lv.content_sha256,
            "content_size": lv.content_size, "content_unpacked_size": lv.content_unpacked_size,
            "layer_version_arn": lv.layer_version_arn, "created": _iso(lv.created), "used_by": list(lv.used_by)}


def _layer_text(d: dict) -> str:
    rows = [("layer", d["ref"]), ("description", d["description"] or "-"),
            ("content sha256", d["content_sha256"]),
            ("content size", f"{d['content_size']} bytes ({d['content_unpacked_size']} unpacked)"),
            ("arn", d["layer_version_arn"]), ("created", d["created"]),
            ("used by", ", ".join(d["used_by"]) or "-")]
    return "\n".join(f"{label + ':':<22}{value}" for label, value in rows)


def cmd_publish(args, client) -> int:
    from runtime.v1 import function_pb2, layers_pb2 as pb
    p = Path(args.content)
    if not (p.is_dir() or (p.is_file() and zipfile.is_zipfile(p))):
        raise UsageError(f"layer publish {args.content}: not a directory or a zip file")
    data = load_code(args.content)  # fail before any call
    stream = [pb.PublishLayerVersionRequest(layer=pb.LayerSpec(name=args.name, description=args.description))]
    stream += (pb.PublishLayerVersionRequest(code=function_pb2.CodeChunk(data=data[i:i + CHUNK_SIZE]))
               for i in range(0, len(data), CHUNK_SIZE))
    d = _layer_dict(client.layers.PublishLayerVersion(iter(stream), **client.opts()))
    _output(args, d, _layer_text(d))
    return 0


def cmd_list(args, client) -> int:
    from runtime.v1 import layers_pb2 as pb
    resp = client.layers.ListLayerVersions(pb.ListLayerVersionsRequest(name=args.name or ""), **client.opts())
    rows = [_layer_dict(lv) for lv in resp.versions]
    _output(args, rows, _table(
        ["LAYER", "UNPACKED", "CREATED", "USED BY", "DESCRIPTION"],
        [[r["ref"], r["content_unpacked_size"], r["created"], ",".join(r["used_by"]) or "-", r["description"]]
         for r in rows]))
    return 0


def cmd_get(args, client) -> int:
    from runtime.v1 import layers_pb2 as pb
    name, version = _ref(args.ref)
    d = _layer_dict(client.layers.GetLayerVersion(pb.GetLayerVersionRequest(name=name, version=version),
                                                  **client.opts()))
    _output(args, d, _layer_text(d))
    return 0


def cmd_delete(args, client) -> int:
    from runtime.v1 import layers_pb2 as pb
    name, version = _ref(args.ref)
    client.layers.DeleteLayerVersion(pb.DeleteLayerVersionRequest(name=name, version=version), **client.opts())
    _output(args, {"layer": f"{name}:{version}", "deleted": True}, f"deleted {name}:{version}")
    return 0


def register(sub, common) -> None:
    """Adds ``fnctl layer ACTION`` to fnctl's subcommands ``sub``; ``common``
    carries --endpoint, --token, --json."""
    layer = sub.add_parser("layer", parents=[common], help="publish, list, inspect and delete layer versions",
                           description=__doc__.split("\n\n")[0])
    actions = layer.add_subparsers(dest="layer_command", required=True, metavar="ACTION")
    p = actions.add_parser("publish", parents=[common], help="publish a zip or directory as the next version")
    p.add_argument("name", help="layer name, 1-64 characters of [A-Za-z0-9_-]")
    p.add_argument("content", metavar="ZIP|DIR", help="the layer's files, as they appear under /opt")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_publish)
    p = actions.add_parser("list", parents=[common], help="list layer versions")
    p.add_argument("name", nargs="?", help="one layer (default: all)")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("get", parents=[common], help="show one layer version")
    p.add_argument("ref", metavar="NAME:VERSION")
    p.set_defaults(func=cmd_get)
    p = actions.add_parser("delete", parents=[common], help="delete a layer version no function uses")
    p.add_argument("ref", metavar="NAME:VERSION")
    p.set_defaults(func=cmd_delete)
